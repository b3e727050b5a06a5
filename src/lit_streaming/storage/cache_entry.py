"""One dataset version's folder in the local cache, shared by every process and rank on the machine.

Layout of an entry (``<root>/<dataset dirname>/<version>/``)::

    index.json                       the dataset's index as fetched (a record of what this entry holds)
    <chunk filename>                 published chunks: complete and verified, they appear by atomic rename
    .lit_streaming/lock              bookkeeping lock, held for milliseconds (pins, reservations, eviction)
    .lit_streaming/locks/<k>.lock    held while chunk k downloads, so the machine downloads it once
    .lit_streaming/refs/<k>.<owner>  pin: process <owner> reads chunk k or will soon; never evicted meanwhile
    .lit_streaming/tmp/<k>.<owner>   an in-flight download of chunk k, accounted at the chunk's full size
    .lit_streaming/users/<owner>     processes using the entry; an entry without live users may be removed

Disk bound: published chunks, index.json and every in-flight download (at full size) stay within
``max_bytes``, because a download starts only after unpinned chunks (least recently used first) are evicted to
make room for it. When pinned chunks alone fill the budget, a prefetch is skipped for now, but a download a
reader is blocked on goes ahead: at most one chunk per downloading reader over the bound, with a warning that
``max_cache_size`` is smaller than what the readers hold open. Owners are ``<pid>@<host>``; markers of dead
processes are removed whenever the entry is scanned.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import filelock

from lit_streaming.format.index import DatasetIndex, InvalidIndexError
from lit_streaming.storage.errors import CacheTimeoutError
from lit_streaming.storage.integrity import stored_size, whole_file_compressed
from lit_streaming.storage.owners import current_owner, owner_alive
from lit_streaming.storage.settings import StorageSettings

logger = logging.getLogger("lit_streaming.storage")

META = ".lit_streaming"
INDEX_COPY = "index.json"


@contextmanager
def hold_lock(path: str, timeout: float, what: str, poll_s: float = 0.001) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (flock: released by the OS if the holder dies). Contenders poll
    every ``poll_s``: the bookkeeping lock is held for well under a millisecond, so polling must be brisk."""
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=timeout, poll_interval=poll_s)
    except filelock.Timeout:
        raise CacheTimeoutError(
            f"Timed out after {timeout:g}s waiting for {what} (lock file {path})"
        ) from None
    try:
        yield
    finally:
        lock.release()


class CacheEntry:
    """Bookkeeping for one cache entry; every method is safe to call from any thread or process."""

    def __init__(
        self, path: str, index: DatasetIndex, max_bytes: int | None, settings: StorageSettings
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._settings = settings
        self._filenames = [c.filename for c in index.chunks]
        # An in-flight download is accounted at its final size; LitData's compressed chunks lack it, so their
        # uncompressed size (an upper bound) stands in.
        whole_file = whole_file_compressed(index)
        self._sizes = [stored_size(c, whole_file) or c.chunk_bytes for c in index.chunks]
        self._by_name = {os.path.normpath(name): k for k, name in enumerate(self._filenames)}
        clashing = [name for name in self._by_name if name.split(os.sep)[0] == META]
        if clashing:
            raise InvalidIndexError(
                f"{path}: chunk filename {clashing[0]!r} would overwrite the cache's bookkeeping"
            )
        self._warned_overflow = False
        self._thread_lock = threading.Lock()
        self._thread_lock_pid = os.getpid()

    # ---- creation ------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str,
        index: DatasetIndex,
        index_bytes: bytes,
        max_bytes: int | None,
        settings: StorageSettings,
    ) -> CacheEntry:
        """Create (or reuse) the entry at ``path``, register this process as a user, and remove entries of
        other versions of the same dataset that no live process uses."""
        entry = cls(path, index, max_bytes, settings)
        entry.join(index_bytes)
        return entry

    def join(self, index_bytes: bytes | None = None) -> None:
        """Register this process as a user of the entry (creating its folders when missing)."""
        dataset_dir = os.path.dirname(self.path)
        os.makedirs(dataset_dir, exist_ok=True)
        with hold_lock(
            os.path.join(dataset_dir, ".lock"), self._settings.lock_timeout_s, f"cache {dataset_dir}"
        ):
            for sub in ("locks", "refs", "tmp", "users"):
                os.makedirs(os.path.join(self.path, META, sub), exist_ok=True)
            _touch(os.path.join(self.path, META, "users", current_owner()))
            index_copy = os.path.join(self.path, INDEX_COPY)
            if index_bytes is not None and not os.path.exists(index_copy):
                tmp = f"{index_copy}.{current_owner()}.tmp"
                with open(tmp, "wb") as f:
                    f.write(index_bytes)
                os.replace(tmp, index_copy)
            _remove_unused_versions(dataset_dir, keep=os.path.basename(self.path))

    # ---- paths ---------------------------------------------------------------------------------------------
    def chunk_file(self, k: int) -> str:
        return os.path.join(self.path, self._filenames[k])

    def size_of(self, k: int) -> int:
        """The bytes chunk ``k`` takes in the cache (its accounted size while it downloads)."""
        return self._sizes[k]

    def _meta(self, *parts: str) -> str:
        return os.path.join(self.path, META, *parts)

    # ---- pins ----------------------------------------------------------------------------------------------
    def pin(self, k: int) -> bool:
        """Protect chunk ``k`` from eviction for this process; return whether it is already published."""
        with self._locked():
            _touch(self._meta("refs", f"{k}.{current_owner()}"))
            try:
                os.utime(self.chunk_file(k))  # eviction takes the least recently used chunks first
            except FileNotFoundError:
                return False
            return True

    def unpin(self, k: int) -> None:
        _unlink_quietly(self._meta("refs", f"{k}.{current_owner()}"))

    def unpin_all(self, chunks: set[int]) -> None:
        for k in chunks:
            self.unpin(k)

    # ---- downloads -----------------------------------------------------------------------------------------
    def is_published(self, k: int) -> bool:
        return os.path.exists(self.chunk_file(k))

    @contextmanager
    def download_lock(self, k: int, url: str) -> Iterator[None]:
        """Held while chunk ``k`` downloads: another process wanting it waits, then finds it published."""
        timeout = self._settings.wait_timeout_s
        with hold_lock(self._meta("locks", f"{k}.lock"), timeout, f"another download of {url}", poll_s=0.005):
            yield

    def reserve(self, k: int, blocking_reader: bool) -> str | None:
        """Make room for chunk ``k`` and return the temp path to download it to.

        Returns None when the room can only come from chunks that readers pin and no reader waits for this
        chunk yet (a prefetch); a reader blocked on the chunk gets its temp path regardless.
        """
        with self._locked():
            if self.max_bytes is not None and not self._make_room(self._sizes[k], evict_all=blocking_reader):
                if not blocking_reader:
                    return None
                if not self._warned_overflow:
                    self._warned_overflow = True
                    logger.warning(
                        "Cache %s: max_cache_size=%d bytes is smaller than the chunks readers hold open; "
                        "downloading %s anyway. Raise max_cache_size or lower shuffle_window / num_workers.",
                        self.path,
                        self.max_bytes,
                        self._filenames[k],
                    )
            tmp = self._meta("tmp", f"{k}.{current_owner()}")
            open(tmp, "wb").close()
            return tmp

    def publish(self, k: int, tmp: str) -> None:
        """Atomically make the verified download at ``tmp`` the chunk file (under the lock, so that a
        concurrent scan never counts it twice or not at all)."""
        final = self.chunk_file(k)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        with self._locked():
            os.replace(tmp, final)

    @staticmethod
    def discard(tmp: str) -> None:
        _unlink_quietly(tmp)

    # ---- accounting and eviction ---------------------------------------------------------------------------
    def usage(self) -> int:
        """Bytes the entry accounts for now: files on disk plus the full size of in-flight downloads."""
        with self._locked():
            return self._scan()[0]

    def _make_room(self, need: int, evict_all: bool) -> bool:
        """Evict unpinned chunks (least recently used first) until ``need`` more bytes fit. Without
        ``evict_all``, evict nothing unless that suffices."""
        assert self.max_bytes is not None
        usage, candidates = self._scan()
        excess = usage + need - self.max_bytes
        if excess <= 0:
            return True
        if not evict_all and sum(size for _, size, _ in candidates) < excess:
            return False
        for _, size, path in sorted(candidates):
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            excess -= size
            if excess <= 0:
                return True
        return False

    def _scan(self) -> tuple[int, list[tuple[int, int, str]]]:
        """(accounted bytes, evictable chunks as (mtime, size, path)); drops markers of dead processes."""
        alive: dict[str, bool] = {}

        def live(marker_dir: str) -> list[int]:
            chunks = []
            for name in os.listdir(marker_dir):
                k_text, _, owner = name.partition(".")
                if owner not in alive:
                    alive[owner] = owner_alive(owner)
                if alive[owner] and k_text.isdigit():
                    chunks.append(int(k_text))
                elif not alive[owner]:
                    _unlink_quietly(os.path.join(marker_dir, name))
            return chunks

        pinned = set(live(self._meta("refs")))
        usage = sum(self._sizes[k] for k in live(self._meta("tmp")) if k < len(self._sizes))
        candidates = []
        for dirpath, dirnames, filenames in os.walk(self.path):
            if dirpath == self.path and META in dirnames:
                dirnames.remove(META)
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                usage += st.st_size
                k = self._by_name.get(os.path.relpath(path, self.path))
                if k is not None and k not in pinned:
                    candidates.append((st.st_mtime_ns, st.st_size, path))
        return usage, candidates

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The bookkeeping lock. Threads of one process queue on a thread lock first (handed over at once);
        only processes contend for the file lock, which has to be polled."""
        if self._thread_lock_pid != os.getpid():  # forked: the parent's lock may have been held mid-fork
            self._thread_lock, self._thread_lock_pid = threading.Lock(), os.getpid()
        timeout = self._settings.lock_timeout_s
        if not self._thread_lock.acquire(timeout=timeout):
            raise CacheTimeoutError(
                f"Timed out after {timeout:g}s waiting for cache entry {self.path} (thread lock)"
            )
        try:
            with hold_lock(self._meta("lock"), timeout, f"cache entry {self.path}"):
                yield
        finally:
            self._thread_lock.release()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_thread_lock=None, _thread_lock_pid=-1)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock, self._thread_lock_pid = threading.Lock(), os.getpid()


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_unused_versions(dataset_dir: str, keep: str) -> None:
    """Delete other versions of this dataset that no live process uses (the caller holds the dataset lock,
    which every process takes before it starts using a version)."""
    for name in os.listdir(dataset_dir):
        version_dir = os.path.join(dataset_dir, name)
        if name == keep or name.startswith(".") or not os.path.isdir(version_dir):
            continue
        users_dir = os.path.join(version_dir, META, "users")
        users = os.listdir(users_dir) if os.path.isdir(users_dir) else []
        if not any(owner_alive(owner) for owner in users):
            logger.info(
                "Removing %s: an older version of the dataset that no running process uses", version_dir
            )
            shutil.rmtree(version_dir, ignore_errors=True)
