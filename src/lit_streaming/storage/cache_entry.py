"""One dataset version's folder in the local cache, shared by every process and rank on the machine.

Layout of an entry (``<root>/<dataset dirname>/<version>/``)::

    index.json                       the dataset's index as fetched (a record of what this entry holds)
    <chunk filename>                 published chunks: complete and verified, they appear by atomic rename
    .lit_streaming/lock              bookkeeping lock, held for milliseconds (pins, reservations, eviction)
    .lit_streaming/locks/<k>.lock    held while chunk k downloads, so the machine downloads it once
    .lit_streaming/refs/<k>.<reader> held pin: the reader has chunk k open (or is opening it); never evicted
    .lit_streaming/ahead/<k>.<reader> prefetch pin: the reader will open chunk k soon; evicted only for a reader
                                     that is blocked on a download, never for another prefetch
    .lit_streaming/tmp/<k>.<reader>  an in-flight download of chunk k, accounted at the chunk's full size
    .lit_streaming/users/<reader>    readers using the entry; an entry without live users may be removed

A reader is ``<pid>-<start>@<host>~<token>`` (see ``owners``): each ``CacheEntry`` object in each process is
its own reader, so two datasets over one URL in one process never drop each other's pins.

Disk bound (hard): published chunks, index.json and every in-flight download (at full size) stay within
``max_bytes`` plus at most one chunk. A download starts only after evictable chunks (unpinned first, least
recently used first; then, for a reader blocked on the chunk, prefetch-pinned ones) make room for it. A blocked
reader may overshoot by its one chunk only while the entry is within the bound; otherwise it waits for other
readers to release chunks, and fails with ``CacheFullError`` when none can (or after ``room_timeout_s``).
Pins never override the bound: readers must hold no more chunks than ``chunks_per_reader`` says fit. Markers of
dead readers are removed whenever the entry is joined or scanned, and a reader removes its own when it ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import filelock

from lit_streaming.engine.per_process import PerProcess
from lit_streaming.errors import LitStreamingValueError
from lit_streaming.format.index import InvalidIndexError
from lit_streaming.formats.base import ShardTable, as_shard_table
from lit_streaming.storage.errors import CacheFullError, CacheTimeoutError
from lit_streaming.storage.owners import (
    READER_SEP,
    current_owner,
    new_reader_token,
    owner_alive,
    owner_of,
)
from lit_streaming.storage.settings import StorageSettings

logger = logging.getLogger("lit_streaming.storage")

META = ".lit_streaming"
INDEX_COPY = "index.json"
MARKER_DIRS = ("locks", "refs", "ahead", "tmp", "users")


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
    """Bookkeeping for one cache entry; every method is safe to call from any thread or process.

    The object is one reader of the entry: its pins and its user marker carry a token of its own, made again
    in each process it is pickled or forked into.
    """

    def __init__(
        self, path: str, table: ShardTable, max_bytes: int | None, settings: StorageSettings
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._settings = settings
        table = as_shard_table(table)  # a format's native index (LitData's DatasetIndex) is accepted too
        self._filenames = table.filenames
        # An in-flight download is accounted at its final size; LitData's compressed chunks lack it, so their
        # uncompressed size (an upper bound) stands in.
        self._sizes = [s.budget_bytes for s in table.shards]
        self._index_bytes = 0
        self._by_name = {os.path.normpath(name): k for k, name in enumerate(self._filenames)}
        clashing = [name for name in self._by_name if name.split(os.sep)[0] == META]
        if clashing:
            raise InvalidIndexError(
                f"{path}: chunk filename {clashing[0]!r} would overwrite the cache's bookkeeping"
            )
        self._own: PerProcess[tuple[threading.Lock, str]] = PerProcess()
        self._process_own()

    # ---- creation ------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str,
        table: ShardTable,
        index_bytes: bytes,
        max_bytes: int | None,
        settings: StorageSettings,
    ) -> CacheEntry:
        """Create (or reuse) the entry at ``path``, register this reader as a user, and remove entries of
        other versions of the same dataset that no live process uses."""
        entry = cls(path, table, max_bytes, settings)
        entry._index_bytes = len(index_bytes)
        entry.join(index_bytes)
        return entry

    @property
    def reader(self) -> str:
        """This reader's id in marker names (a new one in each process the object reaches)."""
        return self._process_own()[1]

    def join(self, index_bytes: bytes | None = None) -> None:
        """Register this reader as a user of the entry (creating its folders when missing), and drop markers
        that readers which have exited left behind (their pins would otherwise pile up and hold chunks)."""
        dataset_dir = os.path.dirname(self.path)
        os.makedirs(dataset_dir, exist_ok=True)
        with hold_lock(
            os.path.join(dataset_dir, ".lock"), self._settings.lock_timeout_s, f"cache {dataset_dir}"
        ):
            for sub in MARKER_DIRS:
                os.makedirs(os.path.join(self.path, META, sub), exist_ok=True)
            _touch(os.path.join(self.path, META, "users", self.reader))
            index_copy = os.path.join(self.path, INDEX_COPY)
            if index_bytes is not None and not os.path.exists(index_copy):
                tmp = f"{index_copy}.{current_owner()}.tmp"
                with open(tmp, "wb") as f:
                    f.write(index_bytes)
                os.replace(tmp, index_copy)
            _remove_unused_versions(dataset_dir, keep=os.path.basename(self.path))
        with self._locked():
            self._drop_dead_markers()

    def leave(self, chunks: set[int] | None = None) -> None:
        """This reader is done: drop its pins (``chunks``, or every one it has) and its user marker."""
        reader = self.reader
        for sub in ("refs", "ahead"):
            folder = self._meta(sub)
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                k_text, _, who = name.partition(".")
                if who == reader and (chunks is None or (k_text.isdigit() and int(k_text) in chunks)):
                    _unlink_quietly(os.path.join(folder, name))
        _unlink_quietly(self._meta("users", reader))

    # ---- paths ---------------------------------------------------------------------------------------------
    def chunk_file(self, k: int) -> str:
        return os.path.join(self.path, self._filenames[k])

    def size_of(self, k: int) -> int:
        """The bytes chunk ``k`` takes in the cache (its accounted size while it downloads)."""
        return self._sizes[k]

    def _meta(self, *parts: str) -> str:
        return os.path.join(self.path, META, *parts)

    # ---- capacity ------------------------------------------------------------------------------------------
    def chunks_per_reader(self, num_readers: int, chunk_bytes: int | None = None) -> int | None:
        """How many chunks each of ``num_readers`` readers on this machine may hold open at once so that all of
        them fit in ``max_bytes``; None when the cache is unbounded.

        ``chunk_bytes`` estimates a chunk's size in the cache (default: the largest chunk of the dataset, which
        never overestimates what fits). The answer may be 0: the budget cannot hold one chunk per reader, and
        readers will wait for one another (then fail with ``CacheFullError``).
        """
        if self.max_bytes is None:
            return None
        if num_readers < 1:
            raise LitStreamingValueError(f"num_readers must be >= 1, got {num_readers}")
        size = chunk_bytes if chunk_bytes is not None else max(self._sizes, default=0)
        if size <= 0:
            return None
        room = self.max_bytes - self._index_bytes
        return max(0, room // (num_readers * size))

    # ---- pins ----------------------------------------------------------------------------------------------
    def pin(self, k: int, ahead: bool = False) -> bool:
        """Protect chunk ``k`` for this reader: held (never evicted) or, with ``ahead``, prefetched (evicted only
        for a blocked reader). Return whether the chunk is published. A held pin replaces the ahead one."""
        with self._locked():
            _touch(self._meta("ahead" if ahead else "refs", f"{k}.{self.reader}"))
            if not ahead:
                _unlink_quietly(self._meta("ahead", f"{k}.{self.reader}"))
            try:
                os.utime(self.chunk_file(k))  # eviction takes the least recently used chunks first
            except FileNotFoundError:
                return False
            return True

    def unpin(self, k: int, ahead: bool = False) -> None:
        _unlink_quietly(self._meta("ahead" if ahead else "refs", f"{k}.{self.reader}"))

    def unpin_all(self, chunks: set[int]) -> None:
        for k in chunks:
            self.unpin(k)
            self.unpin(k, ahead=True)

    # ---- downloads -----------------------------------------------------------------------------------------
    def is_published(self, k: int) -> bool:
        return os.path.exists(self.chunk_file(k))

    @contextmanager
    def download_lock(self, k: int, url: str) -> Iterator[None]:
        """Held while chunk ``k`` downloads: another process wanting it waits, then finds it published."""
        timeout = self._settings.wait_timeout_s
        with hold_lock(self._meta("locks", f"{k}.lock"), timeout, f"another download of {url}", poll_s=0.005):
            yield

    def reserve(self, k: int, blocking_reader: bool, replacing: bool = False) -> str | None:
        """Make room for chunk ``k`` and return the temp path to download it to.

        A prefetch (not ``blocking_reader``) gets None when the room would have to come from pinned chunks. A
        reader blocked on the chunk may also evict prefetch pins, and may take the entry one chunk past the
        bound while it is within it; otherwise it waits (polling) for other readers to release chunks, and raises
        ``CacheFullError`` when no other reader holds any or after ``room_timeout_s``. ``replacing``: chunk ``k``
        is published but corrupt and will be overwritten; its current bytes count as freed.
        """
        deadline = time.monotonic() + self._settings.room_timeout_s
        delay = 0.002
        while True:
            with self._locked():
                outcome = self._try_reserve(k, blocking_reader, replacing)
                if isinstance(outcome, str) or outcome is None:
                    return outcome
                usage, own, others = outcome
            if others == 0 or time.monotonic() >= deadline:
                raise CacheFullError(self._full_message(k, usage, own, others))
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _try_reserve(
        self, k: int, blocking_reader: bool, replacing: bool
    ) -> str | None | tuple[int, int, int]:
        """One attempt under the lock: the temp path, None (a prefetch without room), or for a blocked reader
        that must wait (usage, bytes this reader pins, bytes other live readers pin or download)."""
        need = self._sizes[k]
        if self.max_bytes is not None:
            scan = self._scan()
            usage = scan.usage
            if replacing:
                try:
                    usage -= os.path.getsize(self.chunk_file(k))
                except FileNotFoundError:
                    pass
            excess = usage + need - self.max_bytes
            if excess > 0:
                evictable = sorted(scan.unpinned) + (sorted(scan.ahead_only) if blocking_reader else [])
                room = sum(size for _, size, _ in evictable)
                if room >= excess:
                    self._evict(evictable, excess)
                elif not blocking_reader:
                    return None
                elif usage - room <= self.max_bytes:
                    self._evict(evictable, usage - self.max_bytes)  # within the bound, one chunk past it next
                else:  # already past the bound: wait for a reader to release a chunk
                    return usage, scan.own_pinned, scan.others_pinned
        tmp = self._meta("tmp", f"{k}.{self.reader}")
        open(tmp, "wb").close()
        return tmp

    def _full_message(self, k: int, usage: int, own: int, others: int) -> str:
        waited = "" if others == 0 else f" after waiting {self._settings.room_timeout_s:g}s"
        return (
            f"Cache {self.path} is full{waited}: max_cache_size={self.max_bytes} bytes, {usage} in use, "
            f"{own} of them pinned by this reader and {others} by other readers, and chunk "
            f"{self._filenames[k]} needs {self._sizes[k]} more. Readers hold more chunks than the budget "
            f"holds ({self.chunks_per_reader(1)} chunks in all): raise max_cache_size or lower "
            "shuffle_window / num_workers."
        )

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
    @staticmethod
    def _evict(candidates: list[tuple[int, int, str]], excess: int) -> None:
        """Delete ``candidates`` in their order (least recently used first) until ``excess`` bytes are freed."""
        for _, size, path in candidates:
            if excess <= 0:
                break
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            excess -= size

    def _live_markers(self, sub: str, alive: dict[str, bool]) -> list[tuple[int, str]]:
        """(chunk, reader) of the markers in ``sub`` whose process lives; removes the others."""
        out = []
        folder = self._meta(sub)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return out
        for name in names:
            k_text, _, reader = name.partition(".")
            owner = owner_of(reader)
            if owner not in alive:
                alive[owner] = owner_alive(owner)
            if not alive[owner]:
                _unlink_quietly(os.path.join(folder, name))
            elif k_text.isdigit():
                out.append((int(k_text), reader))
        return out

    def _drop_dead_markers(self) -> None:
        alive: dict[str, bool] = {}
        for sub in ("refs", "ahead", "tmp"):
            self._live_markers(sub, alive)
        users = self._meta("users")
        for name in os.listdir(users):
            owner = owner_of(name)
            if owner not in alive:
                alive[owner] = owner_alive(owner)
            if not alive[owner]:
                _unlink_quietly(os.path.join(users, name))

    def _scan(self) -> _Scan:
        """What the entry holds now; drops markers of dead processes on the way."""
        alive: dict[str, bool] = {}
        me = self.reader
        held = self._live_markers("refs", alive)
        ahead = self._live_markers("ahead", alive)
        in_flight = self._live_markers("tmp", alive)
        held_chunks = {k for k, _ in held}
        ahead_chunks = {k for k, _ in ahead} - held_chunks
        scan = _Scan()
        scan.usage = sum(self._sizes[k] for k, _ in in_flight if k < len(self._sizes))
        scan.others_pinned = sum(self._sizes[k] for k, r in in_flight if r != me and k < len(self._sizes))
        sizes: dict[int, int] = {}
        for dirpath, dirnames, filenames in os.walk(self.path):
            if dirpath == self.path and META in dirnames:
                dirnames.remove(META)
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                scan.usage += st.st_size
                k = self._by_name.get(os.path.relpath(path, self.path))
                if k is None:
                    continue
                sizes[k] = st.st_size
                if k in ahead_chunks:
                    scan.ahead_only.append((st.st_mtime_ns, st.st_size, path))
                elif k not in held_chunks:
                    scan.unpinned.append((st.st_mtime_ns, st.st_size, path))
        own = {k for k, r in held if r == me}
        others = {k for k, r in held if r != me}
        scan.own_pinned = sum(sizes.get(k, 0) for k in own)
        scan.others_pinned += sum(sizes.get(k, 0) for k in others)
        return scan

    def _process_own(self) -> tuple[threading.Lock, str]:
        """This process's thread lock and reader id: fresh ones after a fork or unpickling in another process."""
        return self._own.get_or_set(
            lambda: (threading.Lock(), f"{current_owner()}{READER_SEP}{new_reader_token()}")
        )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The bookkeeping lock. Threads of one process queue on a thread lock first (handed over at once);
        only processes contend for the file lock, which has to be polled."""
        thread_lock = self._process_own()[0]  # forked: the parent's lock may have been held mid-fork
        timeout = self._settings.lock_timeout_s
        if not thread_lock.acquire(timeout=timeout):
            raise CacheTimeoutError(
                f"Timed out after {timeout:g}s waiting for cache entry {self.path} (thread lock)"
            )
        try:
            with hold_lock(self._meta("lock"), timeout, f"cache entry {self.path}"):
                yield
        finally:
            thread_lock.release()


class _Scan:
    """One look at the entry: accounted bytes and who holds what."""

    def __init__(self) -> None:
        self.usage = 0
        self.unpinned: list[tuple[int, int, str]] = []  # (mtime, size, path): evictable by anyone
        self.ahead_only: list[
            tuple[int, int, str]
        ] = []  # pinned for prefetch only: evictable for a blocked reader
        self.own_pinned = 0  # bytes of chunks this reader holds open
        self.others_pinned = 0  # bytes other live readers hold open or are downloading


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
        if not any(owner_alive(owner_of(name)) for name in users):
            logger.info(
                "Removing %s: an older version of the dataset that no running process uses", version_dir
            )
            shutil.rmtree(version_dir, ignore_errors=True)
