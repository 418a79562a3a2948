"""The request interface's pure parts: botocore's retry policy as driven here, answers parsed, hosts normalised."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3sync._crt import host_header
from s3sync._requests import Reply, RequestFailed, Retrier, error_code, parse_listing


def _slowdown(headers: dict[str, str] | None = None) -> RequestFailed:
    body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
    return RequestFailed.from_answer("GetObject", 503, headers or {}, body)


def _run(retrier: Retrier, failures: list[RequestFailed]) -> tuple[Reply | RequestFailed, int]:
    calls = 0

    def once() -> Reply:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return Reply(200, {})

    try:
        return retrier.run(once), calls
    except RequestFailed as exc:
        return exc, calls


def _retrier(max_attempts: int, waits: list[float]) -> Retrier:
    retrier = Retrier(max_attempts, sleep=waits.append)
    retrier._policy._retry_backoff._random = lambda: 1.0  # the top of botocore's full jitter, to compare exactly
    return retrier


def test_throttling_backs_off_with_botocores_one_second_base():
    """SlowDown twice: waits of 1 s then 2 s (botocore's throttling base, doubled), then the answer."""
    waits: list[float] = []
    result, calls = _run(_retrier(3, waits), [_slowdown(), _slowdown()])
    assert isinstance(result, Reply)
    assert calls == 3
    assert waits == [1.0, 2.0]


def test_server_error_backs_off_with_botocores_50_ms_base():
    """A 500 InternalError is transient, not throttling: 50 ms then 100 ms."""
    waits: list[float] = []
    err = RequestFailed.from_answer("PutObject", 500, {}, b"<Error><Code>InternalError</Code></Error>")
    err2 = RequestFailed.from_answer("PutObject", 500, {}, b"<Error><Code>InternalError</Code></Error>")
    result, _calls = _run(_retrier(3, waits), [err, err2])
    assert isinstance(result, Reply)
    assert waits == pytest.approx([0.05, 0.1])


def test_max_attempts_caps_the_tries_and_the_last_failure_is_raised():
    """S3_MAX_ATTEMPTS=3 and three SlowDowns: three calls, two waits, the SlowDown raised."""
    waits: list[float] = []
    result, calls = _run(_retrier(3, waits), [_slowdown(), _slowdown(), _slowdown()])
    assert isinstance(result, RequestFailed)
    assert result.code == "SlowDown"
    assert calls == 3
    assert len(waits) == 2


def test_retry_after_header_raises_the_wait():
    """x-amz-retry-after: 3000 ms lifts the first wait from 1 s to 3 s (capped at the backoff + 5 s)."""
    waits: list[float] = []
    result, _ = _run(_retrier(3, waits), [_slowdown({"x-amz-retry-after": "3000"})])
    assert isinstance(result, Reply)
    assert waits == [3.0]
    waits.clear()
    _run(_retrier(3, waits), [_slowdown({"x-amz-retry-after": "60000"})])
    assert waits == [6.0]


@pytest.mark.parametrize("status", [400, 403, 404, 412])
def test_client_errors_are_final(status):
    """A 4xx that is not throttling is the answer: no retry."""
    waits: list[float] = []
    err = RequestFailed.from_answer("HeadObject", status, {}, b"")
    result, calls = _run(_retrier(5, waits), [err])
    assert result is err
    assert calls == 1
    assert waits == []


@pytest.mark.parametrize("failure", ["connect", "timeout", "closed"])
def test_no_answer_is_retried_like_botocores_connection_errors(failure):
    """Refused, timed out, reset: retried with the 50 ms base up to the attempts allowed."""
    waits: list[float] = []
    errors = [RequestFailed(failure, "x", operation="GetObject") for _ in range(2)]
    result, calls = _run(_retrier(3, waits), errors)
    assert isinstance(result, Reply)
    assert calls == 3
    assert waits == pytest.approx([0.05, 0.1])


@pytest.mark.parametrize("failure", ["tls", "credentials", "cancelled"])
def test_configuration_failures_are_final(failure):
    """An untrusted certificate or missing credentials do not get better by trying again."""
    waits: list[float] = []
    err = RequestFailed(failure, "x", operation="GetObject")
    result, calls = _run(_retrier(3, waits), [err])
    assert result is err
    assert calls == 1


def test_a_body_already_streamed_is_never_retried():
    """Once part of a body reached the sink, a failure is final (the sink cannot take it twice)."""
    err = RequestFailed("closed", "cut", operation="GetObject", body_started=True)
    result, calls = _run(_retrier(3, []), [err])
    assert result is err
    assert calls == 1


def test_retry_quota_stops_a_storm_of_failures():
    """botocore's retry quota (500 units, 5 per throttled retry): a long storm stops retrying, then recovers."""
    retrier = _retrier(2, [])
    retried = 0
    for _ in range(200):
        _result, calls = _run(retrier, [_slowdown(), _slowdown()])
        retried += calls - 1
    assert retried == 100  # 500 / 5: then every failure is final until successes give quota back


@given(st.integers(min_value=1, max_value=10), st.integers(min_value=0, max_value=12))
def test_attempts_never_exceed_the_setting(max_attempts, failures):
    """Whatever the failures, a request is tried at most S3_MAX_ATTEMPTS times."""
    result, calls = _run(_retrier(max_attempts, []), [_slowdown() for _ in range(failures)])
    assert calls == min(failures + 1, max_attempts)
    assert isinstance(result, Reply) == (failures < max_attempts)


def test_region_is_read_from_header_or_body():
    """An answer naming the bucket's region: from x-amz-bucket-region, else from <Region> in the XML."""
    body = b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>eu-central-1</Region></Error>"
    assert RequestFailed.from_answer("HeadObject", 400, {}, body).region == "eu-central-1"
    by_header = RequestFailed.from_answer("HeadObject", 301, {"x-amz-bucket-region": "us-west-2"}, b"")
    assert by_header.region == "us-west-2"
    assert RequestFailed.from_answer("HeadObject", 400, {}, b"").region is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://LocalHost:80", ("http", "localhost", "")),
        ("https://S3.example.COM:443/", ("https", "s3.example.com", "")),
        ("http://user:pw@host:9000", ("http", "host:9000", "")),
        ("https://h:8443/base/", ("https", "h:8443", "/base")),
        ("http://[::1]:80", ("http", "[::1]", "")),
    ],
)
def test_host_is_normalised_as_botocore_signs_it(url, expected):
    """Lower case, no user info, no default port: the Host that is signed is the one botocore signs."""
    assert host_header(url) == expected


def test_listing_that_declares_a_dtd_is_refused():
    """A listing never declares a DTD: one that does is refused before the XML parser sees it; cut XML too."""
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><ListBucketResult>&a;</ListBucketResult>'
    with pytest.raises(RequestFailed, match="DTD"):
        parse_listing(bomb)
    with pytest.raises(RequestFailed, match="unreadable"):
        parse_listing(b"<ListBucketResult><Contents>")


def test_url_encoded_keys_are_decoded_only_when_the_server_says_so():
    """``EncodingType=url`` in the answer: keys are decoded (as botocore does); without it, kept as sent."""
    page = (
        b"<ListBucketResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>{enc}<IsTruncated>false</IsTruncated>"
        b"<Contents><Key>a+b%2Bc%25d</Key><Size>3</Size><ETag>&quot;e&quot;</ETag>"
        b"<LastModified>2026-11-27T14:31:55.000Z</LastModified></Contents></ListBucketResult>"
    )
    decoded = parse_listing(page.replace(b"{enc}", b"<EncodingType>url</EncodingType>"))
    assert decoded["Contents"][0]["Key"] == "a b+c%d"
    assert decoded["Contents"][0]["ETag"] == '"e"'
    assert decoded["Contents"][0]["LastModified"].isoformat() == "2026-11-27T14:31:55+00:00"
    assert parse_listing(page.replace(b"{enc}", b""))["Contents"][0]["Key"] == "a+b%2Bc%25d"
    assert (
        parse_listing(b"<ListBucketResult><NextContinuationToken> </NextContinuationToken></ListBucketResult>")[
            "NextContinuationToken"
        ]
        is None
    )


@given(st.integers(min_value=400, max_value=599), st.sampled_from(["GetObject", "HeadObject", "PutObject"]))
def test_error_code_without_a_body_is_the_status(status, operation):
    """No XML: the code is the status as text (NoSuchKey for a 404 that is not a HEAD), as botocore reports it."""
    code, message = error_code(status, b"", operation)
    assert message == ""
    assert code == ("NoSuchKey" if status == 404 and operation != "HeadObject" else str(status))
