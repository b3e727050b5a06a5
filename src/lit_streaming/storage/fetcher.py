"""One process's chunk downloads for one cache entry.

A chunk the reader needs and no prefetch has is downloaded in the reader's own thread. A small thread pool
downloads the chunks the reader will open next, in its first-use order: at most ``prefetch_chunks`` ahead of
the furthest chunk opened, within ``prefetch_fraction`` of ``max_cache_size``. Every chunk this process holds
open is pinned in the entry until the reader releases it, so no process on the machine evicts it; chunks
prefetched for it are pinned more weakly (see ``CacheEntry``).
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait

from lit_streaming.formats.base import ShardTable
from lit_streaming.storage.cache_entry import CacheEntry
from lit_streaming.storage.errors import CacheTimeoutError, ChunkIntegrityError
from lit_streaming.storage.integrity import verify_file
from lit_streaming.storage.remote_files import RemoteFiles
from lit_streaming.storage.settings import StorageSettings

logger = logging.getLogger("lit_streaming.storage")


class ChunkFetcher:
    """Not picklable and bound to the process that made it (``RemoteSource`` makes one per process).

    Chunks the reader holds open carry a held pin; chunks planned for prefetch carry an ahead pin, which a
    reader elsewhere that is blocked on a download may evict, so a chunk is pinned as held (and its presence
    checked) before ``get`` returns it. A chunk found in the cache is verified (size, and checksum when index.json
    has one) the first time this process opens it; a damaged copy is downloaded again, once.
    """

    def __init__(self, entry: CacheEntry, files: RemoteFiles, table: ShardTable, settings: StorageSettings):
        self._entry = entry
        self._files = files
        self._table = table
        self._settings = settings
        max_bytes = entry.max_bytes
        self._ahead_limit = None if max_bytes is None else int(max_bytes * settings.prefetch_fraction)
        files.filesystem()  # the client is made here, before any pool thread needs it
        entry.join()
        self._pool = ThreadPoolExecutor(
            settings.download_threads, thread_name_prefix="lit-streaming-download"
        )
        self._lock = threading.Lock()
        self._pending: dict[int, Future[bool]] = {}  # prefetches started and not yet settled
        self._verified: set[int] = set()  # chunks this process downloaded or checked
        self._held: Counter[int] = Counter()  # chunks the reader opened and has not released
        self._ahead: set[int] = set()  # chunks pinned for prefetching, not yet opened
        self._order: list[int] = []
        self._position: dict[int, int] = {}
        self._cursor = 0  # position in _order after the furthest chunk opened
        # Runs when the fetcher is collected, at interpreter exit, and when a DataLoader worker process ends
        # (multiprocessing runs its finalizers there; atexit hooks do not run in forked workers).
        self._finalizer = multiprocessing.util.Finalize(
            self, _close, args=(os.getpid(), self._pool, entry), exitpriority=10
        )

    def close(self) -> None:
        """Stop prefetching and drop this reader's pins and user marker now."""
        self._finalizer()

    # ---- reader interface ----------------------------------------------------------------------------------
    def get(self, k: int) -> str:
        """The local path of chunk ``k``, downloading it first if needed; pinned until ``release(k)``."""
        with self._lock:
            first = self._held[k] == 0
            self._held[k] += 1
            self._ahead.discard(k)
            position = self._position.get(k)
            if position is not None:
                self._cursor = max(self._cursor, position + 1)
            future = self._pending.get(k)
        try:
            if first:
                published = self._entry.pin(k)  # held from here on: nobody evicts it
                if not published and not (future is not None and self._wait(k, future)):
                    self._fetch(k, blocking_reader=True)
                self._verify_cached(k)
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
                unpin = True
            else:
                unpin = False
        if unpin:
            self._entry.unpin(k)
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
        self._schedule(dropped=previous)

    # ---- internals -----------------------------------------------------------------------------------------
    def _verify_cached(self, k: int) -> None:
        """Check a chunk this process did not download itself, once; repair a damaged copy by downloading it
        again (an error if the new copy is bad too). Bit rot or a truncated file in the cache is never served."""
        with self._lock:
            if k in self._verified:
                return
        entry = self._table.shards[k]
        url = self._files.url_of(entry.filename)
        try:
            verify_file(self._entry.chunk_file(k), entry, f"cached {url} (chunk {k})")
        except ChunkIntegrityError as err:
            logger.warning("Downloading %s again: the cached copy is damaged (%s)", url, err)
            self._fetch(k, blocking_reader=True, repair=True)
        with self._lock:
            self._verified.add(k)

    def _wait(self, k: int, future: Future[bool]) -> bool:
        """Wait for a prefetch of ``k``; True if it published the chunk, False if it found no room."""
        done, _ = wait([future], timeout=self._settings.wait_timeout_s)
        if not done:
            url = self._files.url_of(self._table.shards[k].filename)
            raise CacheTimeoutError(f"Timed out after {self._settings.wait_timeout_s:g}s waiting for {url}")
        with self._lock:
            if self._pending.get(k) is future:
                del self._pending[k]  # settled: a failure is raised once, a later get retries
        return future.result() and self._entry.is_published(k)

    def _schedule(self, dropped: set[int] | None = None) -> None:
        """Pin the next chunks of the plan (ahead pins) and start prefetches for those not in the cache;
        drop the ahead pins of chunks no longer planned."""
        limit, chunks = self._ahead_limit, self._settings.prefetch_chunks
        start, unpin = [], []
        with self._lock:
            for k, future in list(self._pending.items()):
                if future.done() and future.exception() is None:
                    del self._pending[k]
            wanted: set[int] = set()
            count = total = 0
            for k in self._order[self._cursor :]:
                size = self._entry.size_of(k)
                if count >= chunks or (limit is not None and count and total + size > limit):
                    break
                count += 1
                total += size
                if self._held[k] > 0:
                    continue
                wanted.add(k)
                if k not in self._ahead:
                    start.append(k)
            for k in (self._ahead - wanted) | ((dropped or set()) - wanted):
                if self._held[k] == 0:
                    unpin.append(k)
            self._ahead = wanted
        for k in unpin:
            self._entry.unpin(k, ahead=True)
        for k in start:
            if not self._entry.pin(k, ahead=True):
                with self._lock:
                    if k not in self._pending:
                        self._pending[k] = self._pool.submit(self._fetch, k, False)

    def _fetch(self, k: int, blocking_reader: bool, repair: bool = False) -> bool:
        """Download chunk ``k`` unless some process already did; False if a prefetch found no room. With
        ``repair``, the published copy failed its check: replace it (unless another reader already did)."""
        entry = self._table.shards[k]
        url = self._files.url_of(entry.filename)
        if not repair and self._entry.is_published(k):
            return True
        with self._entry.download_lock(k, url):
            if repair:
                try:
                    verify_file(self._entry.chunk_file(k), entry, url)
                    return True  # repaired by another reader meanwhile
                except (ChunkIntegrityError, FileNotFoundError):
                    pass
            elif self._entry.is_published(k):
                return True
            tmp = self._entry.reserve(k, blocking_reader, replacing=repair)
            if tmp is None:
                return False
            try:
                self._files.download(entry, tmp, f"{url} (chunk {k})")
                self._entry.publish(k, tmp)
            finally:
                self._entry.discard(tmp)
        with self._lock:
            self._verified.add(k)
        return True


def _close(pid: int, pool: ThreadPoolExecutor, entry: CacheEntry) -> None:
    """Stop prefetching and drop this reader's pins and user marker when its fetcher goes away (or its process
    ends). A forked child that inherits the finalizer leaves the parent's pool and pins alone."""
    if os.getpid() != pid:
        return
    pool.shutdown(wait=False, cancel_futures=True)
    entry.leave()
