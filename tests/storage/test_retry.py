"""Which errors are retried, how often, and what the final error says."""

from __future__ import annotations

import errno
import logging
import random

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from lit_streaming.storage.errors import DownloadError, RemoteFileNotFoundError
from lit_streaming.storage.retry import backoff_delays, call_with_retries, is_transient
from lit_streaming.storage.settings import StorageSettings

FAST = StorageSettings(attempts=4, backoff_s=0.001, max_backoff_s=0.002)


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(
    "err",
    [
        client_error(500, "InternalError"),
        client_error(503, "SlowDown"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        TimeoutError("read timed out"),
        OSError(errno.EIO, "InternalError"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ],
)
def test_transient(err):
    assert is_transient(err)


@pytest.mark.parametrize(
    "err",
    [
        client_error(403, "AccessDenied"),
        client_error(400, "InvalidRequest"),
        FileNotFoundError("no such key"),
        PermissionError("denied"),
        OSError(errno.EINVAL, "bad request"),
        OSError(errno.ENOSPC, "disk full"),
        ValueError("a bug"),
    ],
)
def test_permanent(err):
    assert not is_transient(err)


def flaky(failures: list[BaseException]):
    calls = []

    def fn() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "ok"

    return fn, calls


def test_transient_failures_are_retried_and_logged(caplog):
    fn, calls = flaky([ConnectionResetError("reset"), client_error(500, "InternalError")])
    with caplog.at_level(logging.WARNING, logger="lit_streaming.storage"):
        assert call_with_retries(fn, "s3://b/x.bin", FAST, random.Random(0)) == "ok"
    assert len(calls) == 3
    assert [r.getMessage().startswith("Retrying s3://b/x.bin") for r in caplog.records] == [True, True]


def test_gives_up_after_the_bound_naming_the_url():
    fn, calls = flaky([TimeoutError("slow")] * 10)
    with pytest.raises(DownloadError, match=r"Giving up on s3://b/x.bin after 4 attempts.*TimeoutError"):
        call_with_retries(fn, "s3://b/x.bin", FAST, random.Random(0))
    assert len(calls) == 4


def test_permanent_errors_fail_at_once():
    fn, calls = flaky([client_error(403, "AccessDenied")])
    with pytest.raises(DownloadError, match="Cannot read s3://b/x.bin"):
        call_with_retries(fn, "s3://b/x.bin", FAST, random.Random(0))
    fn, calls = flaky([FileNotFoundError("NoSuchKey")])
    with pytest.raises(RemoteFileNotFoundError, match="s3://b/x.bin does not exist"):
        call_with_retries(fn, "s3://b/x.bin", FAST, random.Random(0))
    assert len(calls) == 1


def test_backoff_doubles_with_jitter_and_a_cap():
    settings = StorageSettings(attempts=6, backoff_s=1.0, max_backoff_s=4.0)
    delays = backoff_delays(settings, random.Random(1))
    assert len(delays) == 5
    for delay, base in zip(delays, [1, 2, 4, 4, 4]):
        assert 0.5 * base <= delay <= 1.5 * base


def test_settings_are_validated():
    with pytest.raises(ValueError, match="attempts"):
        StorageSettings(attempts=0)
    with pytest.raises(ValueError, match="prefetch_fraction"):
        StorageSettings(prefetch_fraction=0)
