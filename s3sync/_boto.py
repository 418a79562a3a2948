"""The botocore request stack: each request is a call on boto3's S3 client.

Used on AWS itself (virtual-hosted buckets, region redirects, every signing variant botocore
knows) and wherever the awscrt stack is not wanted (``S3_REQUEST_STACK=botocore``). botocore
retries its own calls (standard mode, ``S3_MAX_ATTEMPTS``); this module only reshapes answers and
failures into :class:`~s3sync._requests.Reply` and :class:`~s3sync._requests.RequestFailed`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import botocore.exceptions

from s3sync._requests import Reply, RequestFailed, RequestHook, Sink

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["BotoRequests"]

_R = TypeVar("_R")
_CHUNK = 1024 * 1024
_META = "x-amz-meta-"


class BotoRequests:
    """S3 requests on one bucket through a botocore client (made on first use by ``client``)."""

    def __init__(self, client: Callable[[], S3Client], bucket: str) -> None:
        self.hooks: list[RequestHook] = []
        self._client = client
        self._bucket = bucket

    def head(self, key: str) -> Reply:
        return _reply(self._call("HeadObject", key, lambda c: c.head_object(Bucket=self._bucket, Key=key)))

    def list_page(self, prefix: str, token: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix, "MaxKeys": 1000}
        if token:
            kwargs["ContinuationToken"] = token
        resp: Mapping[str, Any] = self._call("ListObjectsV2", prefix, lambda c: c.list_objects_v2(**kwargs))
        return {
            "Contents": list(resp.get("Contents", [])),
            "IsTruncated": bool(resp.get("IsTruncated")),
            "NextContinuationToken": resp.get("NextContinuationToken") or None,
        }

    def get(self, key: str, byte_range: str | None, sink: Sink, *, small: bool = False) -> Reply:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if byte_range:
            kwargs["Range"] = byte_range
        resp: Mapping[str, Any] = self._call("GetObject", key, lambda c: c.get_object(**kwargs))
        body = resp["Body"]
        reply = _reply(resp)
        start = reply.header("content-range").strip().removeprefix("bytes").strip().partition("-")[0]
        offset = int(start) if start.isdigit() else 0
        try:
            sink.start(reply)
            while chunk := body.read(_CHUNK):
                sink.write(memoryview(chunk), offset)
                offset += len(chunk)
        except botocore.exceptions.BotoCoreError as exc:
            # The answer had begun: a body cut short is a failed transfer, not an unreachable endpoint.
            raise RequestFailed(
                "closed", f"GetObject: {type(exc).__name__}", operation="GetObject", body_started=True
            ) from exc
        finally:
            body.close()
        return reply

    def put(self, key: str, data: bytes, headers: Mapping[str, str]) -> Reply:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": key, "Body": data}
        metadata = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower.startswith(_META):
                metadata[lower[len(_META) :]] = value
            elif lower in _PUT_PARAMS:
                kwargs[_PUT_PARAMS[lower]] = value
        if metadata:
            kwargs["Metadata"] = metadata
        return _reply(self._call("PutObject", key, lambda c: c.put_object(**kwargs)))

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes, content_md5: str) -> Reply:
        def send(c: S3Client) -> Any:
            return c.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, ContentMD5=content_md5
            )

        return _reply(self._call("UploadPart", key, send))

    def delete(self, key: str) -> Reply:
        return _reply(self._call("DeleteObject", key, lambda c: c.delete_object(Bucket=self._bucket, Key=key)))

    def close(self) -> None:
        """The botocore client needs no closing here (the transport owns it)."""

    def _call(self, operation: str, key: str, send: Callable[[S3Client], _R]) -> _R:
        for hook in self.hooks:
            hook(operation, key)
        try:
            return send(self._client())
        except botocore.exceptions.ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            err = exc.response.get("Error", {})
            raise RequestFailed(
                "http",
                str(err.get("Message") or err.get("Code") or exc),
                operation=operation,
                status=int(meta.get("HTTPStatusCode", 0)),
                code=str(err.get("Code", "")),
                headers=dict(meta.get("HTTPHeaders", {})),
            ) from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise RequestFailed("credentials", f"{operation}: no credentials", operation=operation) from exc
        except botocore.exceptions.SSLError as exc:
            raise RequestFailed("tls", f"{operation}: {exc}", operation=operation) from exc
        except (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError) as exc:
            raise RequestFailed("timeout", f"{operation}: {type(exc).__name__}", operation=operation) from exc
        except botocore.exceptions.EndpointConnectionError as exc:
            raise RequestFailed("connect", f"{operation}: {type(exc).__name__}", operation=operation) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise RequestFailed("closed", f"{operation}: {type(exc).__name__}: {exc}", operation=operation) from exc


#: Headers a PUT may carry, as put_object's parameters.
_PUT_PARAMS = {
    "content-md5": "ContentMD5",
    "content-type": "ContentType",
    "cache-control": "CacheControl",
    "x-amz-acl": "ACL",
    "if-none-match": "IfNoneMatch",
    "if-match": "IfMatch",
}


def _reply(resp: Mapping[str, Any]) -> Reply:
    meta = resp.get("ResponseMetadata", {})
    return Reply(int(meta.get("HTTPStatusCode", 200)), dict(meta.get("HTTPHeaders", {})))
