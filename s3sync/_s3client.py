"""Client construction and error translation: the only module that knows botocore's exceptions.

* :func:`make_client` builds the botocore client (multipart control, deletes, and every request
  on AWS itself);
* :func:`make_requests` chooses the request stack once, when a transport is built: awscrt on a
  custom endpoint, botocore on AWS itself (``S3_REQUEST_STACK`` overrides);
* both resolve endpoint, region, credentials and trusted CAs the way botocore does, so no request
  trusts what another refuses or goes around a proxy another takes;
* :func:`translate` maps a botocore exception or a :class:`~s3sync._requests.RequestFailed` to
  the project's errors, one line each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from s3sync import publish
from s3sync._requests import RequestFailed, Requests, Retrier, parse_iso_timestamp
from s3sync.errors import (
    ConfigurationError,
    EndpointError,
    IntegrityError,
    LocalFileError,
    NotFoundError,
    S3SyncError,
    TransferError,
)
from s3sync.settings import Settings

if TYPE_CHECKING:
    import botocore.session
    from botocore.config import Config
    from mypy_boto3_s3 import S3Client

__all__ = ["StaticKeys", "ca_file", "make_client", "make_requests", "region", "static_keys", "translate"]


@dataclass(frozen=True, slots=True)
class StaticKeys:
    """Keys given in the settings: they never change while the process runs."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


def static_keys(settings: Settings) -> StaticKeys | None:
    """The keys given in the settings, or None (botocore's default chain finds them).

    Raises :class:`ConfigurationError` when only one of the pair is set, or a session token
    without them.
    """
    key = settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None
    secret = settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
    token = settings.aws_session_token.get_secret_value() if settings.aws_session_token else None
    if bool(key) != bool(secret):
        missing = "S3_AWS_SECRET_ACCESS_KEY" if key else "S3_AWS_ACCESS_KEY_ID"
        raise ConfigurationError(f"{missing}: must be set together with its pair", setting=missing)
    if token and not key:
        raise ConfigurationError(
            "S3_AWS_SESSION_TOKEN: needs S3_AWS_ACCESS_KEY_ID and S3_AWS_SECRET_ACCESS_KEY "
            "(temporary keys come as three)",
            setting="S3_AWS_SESSION_TOKEN",
        )
    return StaticKeys(key, secret, token) if key and secret else None


def _session() -> botocore.session.Session:
    import botocore.session  # on first use: about a tenth of a second of imports

    return botocore.session.Session()


def region(settings: Settings, session: botocore.session.Session | None = None) -> str | None:
    """The region: S3_REGION (else AWS_REGION, AWS_DEFAULT_REGION), the AWS config file, us-east-1 off AWS."""
    if settings.region:
        return settings.region
    found = (session or _session()).get_config_variable("region")
    if found:
        return str(found)
    return "us-east-1" if settings.endpoint_url else None


def ca_file(settings: Settings, session: botocore.session.Session | None = None) -> str | None:
    """The CA bundle every request trusts, resolved in botocore's order.

    S3_CA_BUNDLE (else AWS_CA_BUNDLE), then ``ca_bundle`` in the AWS config file, then
    REQUESTS_CA_BUNDLE; None means botocore's default bundle.
    """
    if settings.ca_bundle is not None:
        return str(settings.ca_bundle)
    found = (session or _session()).get_config_variable("ca_bundle")
    if found:
        return str(found)
    if settings.requests_ca_bundle is not None:
        return str(settings.requests_ca_bundle)
    return None


def _client_config(settings: Settings) -> Config:
    from botocore.config import Config  # on first use, like the client

    return Config(
        max_pool_connections=max(10, settings.max_concurrency * 2),
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        # SigV4 for presigned URLs too (botocore's default presigns SigV2 URLs, which newer
        # regions and servers refuse); requests are SigV4 already.
        signature_version="s3v4",
        user_agent_extra="s3sync",
        # Every request's parameters are built here, not by users: validating them again costs
        # CPU on each of thousands of small requests.
        parameter_validation=False,
    )


def make_client(settings: Settings) -> S3Client:
    """One S3 client for the whole process (botocore clients are thread-safe).

    Credentials come from the settings when set, else from botocore's default chain (the
    environment, ``~/.aws``, instance roles). botocore is imported here, on first use.
    """
    keys = static_keys(settings)
    try:
        session = _session()
        # A listing page carries 1,000 LastModified stamps; dateutil parsing them was a tenth of
        # a mirror pass's CPU. ISO 8601 goes through the C parser, anything else through botocore's.
        parsers = session.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=_parse_timestamp)
        cafile = ca_file(settings, session)
        client: S3Client = session.create_client(  # type: ignore[assignment]
            "s3",
            region_name=region(settings, session),
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=keys.access_key if keys else None,
            aws_secret_access_key=keys.secret_key if keys else None,
            aws_session_token=keys.token if keys else None,
            config=_client_config(settings),
            verify=cafile,
        )
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigurationError(f"S3 client: {type(exc).__name__}: {exc}") from None
    return client


def make_requests(settings: Settings, bucket: str, client: Callable[[], S3Client]) -> Requests:
    """The request stack for this transport, chosen once.

    ``auto``: awscrt on a custom endpoint (path-style, the bytes outside the GIL), botocore on AWS
    itself (virtual hosts, region redirects) or when no credentials are found (botocore then
    reports it, or sends unsigned requests where configured).
    """
    from s3sync._boto import BotoRequests

    stack = settings.request_stack
    if stack == "botocore" or (stack == "auto" and not settings.endpoint_url):
        return BotoRequests(client, bucket)
    session = _session()
    credentials = _crt_credentials(settings, session)
    if credentials is None:
        return BotoRequests(client, bucket)
    from s3sync._crt import CrtRequests

    signing_region = region(settings, session) or "us-east-1"
    return CrtRequests(
        endpoint_url=settings.endpoint_url or f"https://s3.{signing_region}.amazonaws.com",
        bucket=bucket,
        region=signing_region,
        credentials=credentials,
        retrier=Retrier(settings.max_attempts),
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_connections=max(10, settings.max_concurrency * 2),
        part_size=settings.multipart_chunksize,
        ca_file=_checked_ca_file(settings, session),
        fallback=BotoRequests(client, bucket),
    )


def _crt_credentials(settings: Settings, session: botocore.session.Session) -> Any:
    """An awscrt credentials provider: the settings' keys, else botocore's chain (refreshed as botocore does)."""
    from awscrt.auth import AwsCredentialsProvider

    keys = static_keys(settings)
    if keys is not None:
        return AwsCredentialsProvider.new_static(keys.access_key, keys.secret_key, keys.token)
    found = session.get_credentials()
    if found is None:
        return None
    from s3transfer.crt import BotocoreCRTCredentialsWrapper  # boto3's own adapter for its crt extra

    return BotocoreCRTCredentialsWrapper(found).to_crt_credentials_provider()


def _checked_ca_file(settings: Settings, session: botocore.session.Session) -> str | None:
    """The CA bundle for an https endpoint, or None over http; an unreadable bundle is one clear error."""
    if not (settings.endpoint_url or "https:").startswith("https:"):
        return None
    cafile = ca_file(settings, session)
    if cafile is None:
        from botocore.httpsession import get_cert_path

        cafile = str(get_cert_path(True))
    try:
        with open(cafile, "rb") as fh:
            reason = "" if b"-----BEGIN CERTIFICATE-----" in fh.read() else "no PEM certificate in it"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    if reason:
        raise ConfigurationError(
            f"S3_CA_BUNDLE: cannot load CA certificates from {cafile!r} ({reason})", setting="S3_CA_BUNDLE"
        ) from None
    return cafile


def _parse_timestamp(value: str) -> datetime:
    """botocore's timestamp parser, with a fast path for the ISO 8601 of XML bodies."""
    parsed = parse_iso_timestamp(value)
    if parsed is None:
        import botocore.utils  # loaded with the client anyway

        return botocore.utils.parse_timestamp(value)
    return parsed


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    err = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(err.get("Code", "")), int(status)


def error_code(exc: Exception) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a failed request; ('', 0) when there was no answer."""
    if isinstance(exc, RequestFailed):
        return exc.code, exc.status
    if isinstance(exc, botocore.exceptions.ClientError):
        return _error_code(exc)
    return "", 0


_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError
    | botocore.exceptions.ConnectTimeoutError
    | botocore.exceptions.ReadTimeoutError
    | botocore.exceptions.ConnectionClosedError
    | botocore.exceptions.ConnectionError
)


def translate(
    exc: Exception, *, action: str, bucket: str, key: str | None = None, kind: type[TransferError] = TransferError
) -> S3SyncError:
    """Map a failed request (botocore's or a request stack's) to an :class:`S3SyncError` with a one-line message."""
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    if isinstance(exc, S3SyncError):
        return exc
    no_credentials = botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    if isinstance(exc, no_credentials) or (isinstance(exc, RequestFailed) and exc.failure == "credentials"):
        return ConfigurationError(
            "S3_AWS_ACCESS_KEY_ID: no credentials found (set S3_AWS_ACCESS_KEY_ID and S3_AWS_SECRET_ACCESS_KEY, "
            "or configure boto3's credential chain)",
            setting="S3_AWS_ACCESS_KEY_ID",
        )
    if isinstance(exc, RequestFailed) and exc.failure == "tls":
        # The CRT says only that the handshake failed: an untrusted certificate is the usual cause.
        return EndpointError(
            f"{action} {where}: TLS handshake failed (is the endpoint's certificate trusted?); "
            "for a private CA, set S3_CA_BUNDLE to its PEM file",
            bucket=bucket,
            key=key,
        )
    if isinstance(exc, botocore.exceptions.SSLError):
        text = str(exc)
        reason = text.partition("certificate verify failed: ")[2].partition(" (_ssl.c")[0].strip()
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return EndpointError(
                f"{action} {where}: the endpoint's TLS certificate is not trusted ({reason or 'verify failed'}); "
                "for a private CA, set S3_CA_BUNDLE to its PEM file",
                bucket=bucket,
                key=key,
            )
        return EndpointError(f"{action} {where}: TLS handshake failed", bucket=bucket, key=key)
    if isinstance(exc, RequestFailed) and exc.failure in {"closed", "timeout"} and exc.body_started:
        return kind(f"{action} {where}: the answer was cut short ({exc.failure})", bucket=bucket, key=key)
    if isinstance(exc, _UNREACHABLE) or (isinstance(exc, RequestFailed) and exc.failure != "http"):
        name = exc.failure if isinstance(exc, RequestFailed) else type(exc).__name__
        return EndpointError(f"{action} {where}: endpoint unreachable ({name})", bucket=bucket, key=key)
    if isinstance(exc, botocore.exceptions.ClientError | RequestFailed):
        code, status = error_code(exc)
        if code in {"NoSuchKey", "404", "NotFound"}:
            return NotFoundError(f"{action} {where}: no such object", bucket=bucket, key=key)
        if code == "NoSuchBucket":
            return NotFoundError(f"{action} {where}: bucket {bucket!r} does not exist", bucket=bucket, key=key)
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}:
            return EndpointError(f"{action} {where}: access denied ({code})", bucket=bucket, key=key, code=code)
        if code in {"RequestTimeTooSkewed", "RequestExpired"}:
            return EndpointError(
                f"{action} {where}: the server rejected our clock ({code}); check the system time",
                bucket=bucket,
                key=key,
                code=code,
            )
        if code == "AccessControlListNotSupported":  # S3_DEFAULT_ACL on a bucket with ACLs disabled
            return publish.acl_not_supported(bucket, key)
        if code in {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"}:
            return IntegrityError(f"{action} {where}: the server saw corrupted bytes ({code})", bucket=bucket, key=key)
        return kind(f"{action} {where}: {code or 'error'} (HTTP {status})", bucket=bucket, key=key, code=code)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return kind(f"{action} {where}: {type(exc).__name__}", bucket=bucket, key=key)
    if isinstance(exc, OSError):
        return LocalFileError(f"{action} {where}: {exc.strerror or exc}", bucket=bucket, key=key)
    return kind(f"{action} {where}: {type(exc).__name__}: {exc}", bucket=bucket, key=key)
