"""One process's chunk downloads for one cache entry.

A chunk the reader needs and no prefetch has is downloaded in the reader's own thread. A small thread pool
downloads the chunks the reader will open next, in its first-use order: at most ``prefetch_chunks`` ahead of
the furthest chunk opened, within ``prefetch_fraction`` of ``max_cache_size``. Every chunk this process holds
open or prefetched is pinned in the entry until the reader releases it, so no process on the machine evicts it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait

from lit_streaming.format.index import DatasetIndex
from lit_streaming.storage.cache_entry import CacheEntry
from lit_streaming.storage.errors import CacheTimeoutError
from lit_streaming.storage.integrity import whole_file_compressed
from lit_streaming.storage.remote_files import RemoteFiles
from lit_streaming.storage.settings import StorageSettings


class ChunkFetcher:
    """Not picklable and bound to the process that made it (``RemoteSource`` makes one per process)."""

    def __init__(self, entry: CacheEntry, files: RemoteFiles, index: DatasetIndex, settings: StorageSettings):
        self._entry = entry
        self._files = files
        self._index = index
        self._settings = settings
        self._whole_file = whole_file_compressed(index)
        max_bytes = entry.max_bytes
        self._ahead_limit = None if max_bytes is None else int(max_bytes * settings.prefetch_fraction)
        files.filesystem()  # the client is made here, before any pool thread needs it
        entry.join()
        self._pool = ThreadPoolExecutor(
            settings.download_threads, thread_name_prefix="lit-streaming-download"
        )
        self._lock = threading.Lock()
        self._pending: dict[int, Future[bool]] = {}  # prefetches started and not yet settled
        self._ready: set[int] = set()  # published and pinned by this process
        self._pins: set[int] = set()  # chunks with this process's pin marker in the entry
        self._held: Counter[int] = Counter()  # chunks the reader opened and has not released
        self._ahead: set[int] = set()  # chunks pinned for prefetching, not yet opened
        self._order: list[int] = []
        self._position: dict[int, int] = {}
        self._cursor = 0  # position in _order after the furthest chunk opened
        weakref.finalize(self, _close, os.getpid(), self._pool, entry, self._pins)

    # ---- reader interface ----------------------------------------------------------------------------------
    def get(self, k: int) -> str:
        """The local path of chunk ``k``, downloading it first if needed; pinned until ``release(k)``."""
        with self._lock:
            self._held[k] += 1
            self._ahead.discard(k)
            position = self._position.get(k)
            if position is not None:
                self._cursor = max(self._cursor, position + 1)
            ready = k in self._ready
            future = self._pending.get(k)
        try:
            if not ready:
                if not self._pin(k) and not (future is not None and self._wait(k, future)):
                    self._fetch(k, blocking_reader=True)
                with self._lock:
                    self._ready.add(k)
        except BaseException:
            self.release(k)
            raise
        self._schedule()
        return self._entry.chunk_file(k)

    def release(self, k: int) -> None:
        with self._lock:
            if self._held[k] <= 0:
                return  # not opened through this fetcher (e.g. by the parent before a fork)
            self._held[k] -= 1
            if self._held[k] == 0:
                del self._held[k]
        self._unpin_if_unused(k)
        self._schedule()

    def plan(self, order: list[int]) -> None:
        """The reader will open ``order`` next (first-use order); replaces any earlier plan."""
        with self._lock:
            previous, self._ahead = self._ahead, set()
            self._order = list(order)
            self._position = {k: i for i, k in enumerate(self._order)}
            self._cursor = 0
            for k, future in list(self._pending.items()):
                if future.done():  # a failure from an earlier pass must not be raised in this one
                    del self._pending[k]
        for k in previous:
            self._unpin_if_unused(k)
        self._schedule()

    # ---- internals -----------------------------------------------------------------------------------------
    def _pin(self, k: int) -> bool:
        """Pin chunk ``k`` for this process; return whether it is published."""
        with self._lock:
            already = k in self._pins
            self._pins.add(k)
        return self._entry.is_published(k) if already else self._entry.pin(k)

    def _unpin_if_unused(self, k: int) -> None:
        with self._lock:
            if self._held[k] > 0 or k in self._ahead or k not in self._pins:
                return
            self._pins.discard(k)
            self._ready.discard(k)
        self._entry.unpin(k)

    def _wait(self, k: int, future: Future[bool]) -> bool:
        """Wait for a prefetch of ``k``; True if it published the chunk, False if it found no room."""
        done, _ = wait([future], timeout=self._settings.wait_timeout_s)
        if not done:
            url = self._files.url_of(self._index.chunks[k].filename)
            raise CacheTimeoutError(f"Timed out after {self._settings.wait_timeout_s:g}s waiting for {url}")
        with self._lock:
            if self._pending.get(k) is future:
                del self._pending[k]  # settled: a failure is raised once, a later get retries
        return future.result()

    def _schedule(self) -> None:
        """Pin the next chunks of the plan and start prefetches for those neither ready nor in flight.

        Invariant: every chunk in ``_ready`` is pinned, so ``get`` may return it without asking the entry.
        """
        limit, chunks = self._ahead_limit, self._settings.prefetch_chunks
        start, repin = [], []
        with self._lock:
            for k, future in list(self._pending.items()):
                if future.done() and future.exception() is None:
                    del self._pending[k]
                    if future.result() and k in self._pins:
                        self._ready.add(k)
            count = total = 0
            for k in self._order[self._cursor :]:
                size = self._entry.size_of(k)
                if count >= chunks or (limit is not None and count and total + size > limit):
                    break
                count += 1
                total += size
                if k in self._ready or self._held[k] > 0:
                    continue
                self._ahead.add(k)
                if k not in self._pending:
                    start.append(k)
                elif k not in self._pins:  # in flight since an earlier plan that unpinned it
                    repin.append(k)
        for k in repin:
            self._pin(k)
        for k in start:
            if self._pin(k):
                with self._lock:
                    self._ready.add(k)
            else:
                future = self._pool.submit(self._fetch, k, False)
                with self._lock:
                    self._pending[k] = future

    def _fetch(self, k: int, blocking_reader: bool) -> bool:
        """Download chunk ``k`` unless some process already did; False if a prefetch found no room."""
        entry = self._index.chunks[k]
        url = self._files.url_of(entry.filename)
        if self._entry.is_published(k):
            return True
        with self._entry.download_lock(k, url):
            if self._entry.is_published(k):
                return True
            tmp = self._entry.reserve(k, blocking_reader)
            if tmp is None:
                return False
            try:
                self._files.download(entry, tmp, self._whole_file, f"{url} (chunk {k})")
                self._entry.publish(k, tmp)
            finally:
                self._entry.discard(tmp)
        return True


def _close(pid: int, pool: ThreadPoolExecutor, entry: CacheEntry, pins: set[int]) -> None:
    """Stop prefetching and drop this process's pins when its fetcher goes away (or the interpreter exits).
    A forked child that inherits the finalizer leaves the parent's pool and pins alone."""
    if os.getpid() != pid:
        return
    pool.shutdown(wait=False, cancel_futures=True)
    entry.unpin_all(set(pins))
