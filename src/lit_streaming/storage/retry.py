"""Bounded retries with exponential backoff for remote requests, and which errors deserve one."""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from lit_streaming.storage.errors import DownloadError, RemoteFileNotFoundError, UnsafeFileError
from lit_streaming.storage.settings import StorageSettings

logger = logging.getLogger("lit_streaming.storage")

T = TypeVar("T")

# Client-library exceptions (botocore, aiohttp, urllib3, http.client) that mean "the connection or the server
# hiccuped". Matched by class name so that no optional client library has to be importable.
_TRANSIENT_CLASS_NAMES = frozenset(
    {
        "HTTPClientError",
        "ConnectionClosedError",
        "EndpointConnectionError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "IncompleteRead",
        "ProtocolError",
        "ClientConnectionError",
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "FSTimeoutError",
    }
)
# OSError numbers that retrying cannot fix (bad request, no such object, no permission, full local disk).
_PERMANENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EINVAL",
        "ENOSYS",
        "EPERM",
        "EACCES",
        "ENOENT",
        "ENAMETOOLONG",
        "ENOSPC",
        "EROFS",
        "ENOTDIR",
    )
    if hasattr(errno, name)
)


def is_transient(err: BaseException) -> bool:
    """True for 5xx responses, connection resets and timeouts; False for missing objects, denied access, bad
    requests and programming errors, which would fail the same way again."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(err, (TimeoutError, ConnectionError)):
        return True
    if any(cls.__name__ in _TRANSIENT_CLASS_NAMES for cls in type(err).__mro__):
        return True
    status = _http_status(err)
    if status is not None:
        return status >= 500 or status in (408, 429)
    if isinstance(err, OSError):
        return err.errno not in _PERMANENT_ERRNOS
    return False


def _http_status(err: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError`` (or anything carrying a similar ``response``)."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    return None


def backoff_delays(settings: StorageSettings, rng: random.Random) -> list[float]:
    """Sleeps between the ``attempts`` tries: doubling from ``backoff_s``, capped, with +-50% jitter so that
    many workers hitting the same failure do not retry in lockstep."""
    delays = []
    for i in range(settings.attempts - 1):
        base = min(settings.max_backoff_s, settings.backoff_s * 2**i)
        delays.append(base * rng.uniform(0.5, 1.5))
    return delays


def call_with_retries(
    fn: Callable[[], T], url: str, settings: StorageSettings, rng: random.Random, action: str = "read"
) -> T:
    """Run ``fn`` (one request about ``url``), retrying transient failures; raise an error naming ``url``
    (``action`` says what was attempted: "read", "write", ...)."""
    delays = backoff_delays(settings, rng)
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            if isinstance(err, UnsafeFileError):
                raise  # a refusal, not a failure: already names the file
            if isinstance(err, FileNotFoundError):
                raise RemoteFileNotFoundError(f"{url} does not exist ({err})") from err
            if not is_transient(err):
                raise DownloadError(f"Cannot {action} {url}: {type(err).__name__}: {err}") from err
            if attempt == len(delays):
                raise DownloadError(
                    f"Giving up on {url} after {settings.attempts} attempts; last error: {type(err).__name__}: {err}"
                ) from err
            logger.warning(
                "Retrying %s in %.2fs (attempt %d of %d failed: %s: %s)",
                url,
                delays[attempt],
                attempt + 1,
                settings.attempts,
                type(err).__name__,
                err,
            )
            time.sleep(delays[attempt])
            attempt += 1
