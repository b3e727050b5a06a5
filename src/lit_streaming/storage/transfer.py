"""One bounded transfer: a remote file's bytes into a sink, or a ``DownloadStalledError``.

Client timeouts bound each socket read, not a whole transfer: a server that trickles one byte every half second
never trips botocore's ``read_timeout`` and would hold a reader for days. On asynchronous file systems (s3fs,
gcsfs, http) the body is therefore streamed on fsspec's event loop under three limits from ``StorageSettings``:
an overall deadline per attempt, a longest wait for the next bytes, and (after a grace period) a minimum
average throughput. A transfer past a limit is cancelled, which closes its connection, and the error is a
``TimeoutError`` so that ``call_with_retries`` retries it and then names the URL in a ``DownloadError``.

Synchronous file systems (``memory://``, ``local:`` folders) are read with plain blocking calls: there is no
connection to cancel, and such a read cannot be interrupted from Python anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import fsspec
from fsspec.asyn import AsyncFileSystem

from lit_streaming.errors import LitStreamingError
from lit_streaming.storage.settings import StorageSettings

_BLOCK = 1 << 20


class DownloadStalledError(TimeoutError, LitStreamingError):
    """One transfer attempt went past its deadline, waited too long for bytes, or was too slow."""


class _Stalled(LitStreamingError):
    """Raised on the event loop; not a ``TimeoutError``, which fsspec's ``sync`` would turn into a bare
    ``FSTimeoutError`` without our message."""


def is_async(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` really does its I/O on an event loop (a ``dir://`` wrapper around a synchronous file
    system is an ``AsyncFileSystem`` by class only)."""
    inner = getattr(fs, "fs", None)  # DirFileSystem and other wrappers
    if isinstance(inner, fsspec.AbstractFileSystem) and not getattr(inner, "async_impl", False):
        return False
    return isinstance(fs, AsyncFileSystem) and getattr(fs, "loop", None) is not None


def transfer(
    fs: fsspec.AbstractFileSystem,
    path: str,
    url: str,
    settings: StorageSettings,
    write: Callable[[bytes], Any],
) -> None:
    """Stream the file at ``path`` (``url`` in messages) into ``write``, within the limits of ``settings``."""
    try:
        fsspec.asyn.sync(fs.loop, _stream, fs, path, url, settings, write)
    except _Stalled as err:
        raise DownloadStalledError(str(err)) from None


async def _stream(
    fs: AsyncFileSystem, path: str, url: str, settings: StorageSettings, write: Callable[[bytes], Any]
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + settings.download_timeout_s
    received = 0

    async def bounded(awaitable: Any) -> Any:
        """Await one step of the transfer, no later than the earliest limit it could break."""
        now = loop.time()
        # The moment the next byte must have arrived by for the average to stay at the minimum throughput.
        slow_at = start + settings.throughput_grace_s
        if settings.min_throughput_bps > 0:
            slow_at = max(slow_at, start + (received + 1) / settings.min_throughput_bps)
        limit = min(deadline, now + settings.stall_timeout_s, slow_at)
        try:
            return await asyncio.wait_for(awaitable, timeout=max(0.0, limit - now))
        except asyncio.TimeoutError:
            raise _Stalled(_why(loop.time() - start, received, url, settings)) from None

    open_async = getattr(fs, "open_async", None)
    try:
        if open_async is None:
            raise NotImplementedError
        handle = await bounded(open_async(path, "rb"))
    except NotImplementedError:  # no streaming reads on this file system: one bounded request
        write(await bounded(fs._cat_file(path)))
        return
    try:
        while True:
            block = await bounded(handle.read(_BLOCK))
            if not block:
                return
            write(block)
            received += len(block)
            elapsed = loop.time() - start
            if elapsed > settings.throughput_grace_s and received < settings.min_throughput_bps * elapsed:
                raise _Stalled(_why(elapsed, received, url, settings))
    finally:
        await _close(handle)


async def _close(handle: Any) -> None:
    """Release the response body (s3fs keeps it as ``r``), so an abandoned transfer frees its connection."""
    body = getattr(handle, "r", None)
    close = getattr(body, "close", None)
    if close is not None:
        try:
            result = close()
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # the connection is being dropped anyway
            pass


def _why(elapsed: float, received: int, url: str, settings: StorageSettings) -> str:
    rate = received / elapsed if elapsed > 0 else 0.0
    if elapsed >= settings.download_timeout_s:
        limit = f"past its {settings.download_timeout_s:g}s deadline"
    elif elapsed > settings.throughput_grace_s and rate < settings.min_throughput_bps:
        limit = f"slower than the minimum {settings.min_throughput_bps:g} B/s"
    else:
        limit = f"no bytes for {settings.stall_timeout_s:g}s"
    return f"Transfer of {url} stalled: {limit} ({received} bytes in {elapsed:.1f}s, {rate:.0f} B/s)"
