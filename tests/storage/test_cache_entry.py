"""The cache entry's bookkeeping: the disk bound, pins, in-flight accounting, dead owners, lock timeouts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from support.storage import tree_bytes, write_dataset

from lit_streaming.format.index import read_index
from lit_streaming.storage.cache_entry import META, CacheEntry
from lit_streaming.storage.errors import CacheFullError, CacheTimeoutError
from lit_streaming.storage.owners import current_owner, owner_alive
from lit_streaming.storage.settings import StorageSettings


def dead_owner() -> str:
    """The owner id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return current_owner().replace(str(os.getpid()), str(proc.pid), 1)


@pytest.fixture()
def dataset(tmp_path):
    return write_dataset(tmp_path / "ds", n=16, chunk_size=2, size=100)


def open_entry(tmp_path, dataset, chunks_room: int, version: str = "v1", **settings) -> CacheEntry:
    index = read_index(str(dataset / "index.json"))
    raw = (dataset / "index.json").read_bytes()
    chunk = index.chunks[0].file_bytes
    max_bytes = len(raw) + chunks_room * chunk
    return CacheEntry.open(
        str(tmp_path / "cache" / "ds" / version), index, raw, max_bytes, StorageSettings(**settings)
    )


def put(entry: CacheEntry, dataset, k: int) -> None:
    """Download chunk ``k`` the way the fetcher does (reserve, write, publish)."""
    tmp = entry.reserve(k, blocking_reader=True)
    shutil.copyfile(dataset / os.path.basename(entry.chunk_file(k)), tmp)
    entry.publish(k, tmp)


def present(entry: CacheEntry, n: int = 8) -> list[int]:
    return [k for k in range(n) if entry.is_published(k)]


def on_disk(entry: CacheEntry) -> int:
    """Bytes of the entry's files outside its bookkeeping folder: what ``max_cache_size`` bounds."""
    return tree_bytes(entry.path) - tree_bytes(os.path.join(entry.path, META))


def test_eviction_keeps_the_bound_and_spares_pinned_chunks(tmp_path, dataset):
    entry = open_entry(tmp_path, dataset, chunks_room=3)
    for k in range(3):
        put(entry, dataset, k)
        time.sleep(0.01)  # distinct mtimes: least recently used goes first
    entry.pin(0)
    put(entry, dataset, 3)
    assert present(entry) == [0, 2, 3]  # chunk 1 was the least recently used unpinned one
    assert on_disk(entry) <= tree_bytes(entry.path) <= entry.max_bytes
    entry.unpin(0)
    put(entry, dataset, 4)
    assert present(entry) == [0, 3, 4]  # pinning 0 used it after 2 was published


def test_an_in_flight_download_counts_at_full_size(tmp_path, dataset):
    entry = open_entry(tmp_path, dataset, chunks_room=2)
    first, second = entry.reserve(0, blocking_reader=False), entry.reserve(1, blocking_reader=False)
    assert os.path.getsize(first) == os.path.getsize(second) == 0
    assert entry.reserve(2, blocking_reader=False) is None  # two empty temp files fill a two-chunk budget
    entry.discard(first)
    third = entry.reserve(2, blocking_reader=False)
    assert third is not None
    entry.discard(second)
    entry.discard(third)


def test_pins_never_push_the_cache_past_its_bound(tmp_path, dataset):
    entry = open_entry(tmp_path, dataset, chunks_room=2, room_timeout_s=0.3)
    for k in range(2):
        put(entry, dataset, k)
        entry.pin(k)
    assert entry.reserve(2, blocking_reader=False) is None  # a prefetch never evicts pins
    put(entry, dataset, 2)  # a blocked reader within the bound may go one chunk past it
    entry.pin(2)
    assert present(entry) == [0, 1, 2] and on_disk(entry) == entry.max_bytes + entry.size_of(2)
    start = time.monotonic()
    with pytest.raises(CacheFullError, match=r"is full: max_cache_size=\d+ bytes.*pinned by this reader"):
        entry.reserve(3, blocking_reader=True)  # only this reader could free room: no point waiting
    assert time.monotonic() - start < 0.2 and present(entry) == [0, 1, 2]


def test_a_blocked_reader_waits_for_another_reader_to_release_a_chunk(tmp_path, dataset):
    me = open_entry(tmp_path, dataset, chunks_room=2, room_timeout_s=10)
    other = open_entry(tmp_path, dataset, chunks_room=2)
    put(me, dataset, 0)
    me.pin(0)
    put(other, dataset, 1)
    other.pin(1)
    put(me, dataset, 2)  # one chunk past the bound
    me.pin(2)
    releaser = threading.Timer(0.3, other.unpin, args=(1,))
    releaser.start()
    start = time.monotonic()
    tmp = me.reserve(3, blocking_reader=True)
    assert 0.25 < time.monotonic() - start < 5 and not other.is_published(1)
    me.discard(tmp)
    releaser.join()


def test_a_blocked_reader_gives_up_after_room_timeout(tmp_path, dataset):
    me = open_entry(tmp_path, dataset, chunks_room=1, room_timeout_s=0.3)
    other = open_entry(tmp_path, dataset, chunks_room=1)
    put(other, dataset, 0)
    other.pin(0)
    put(me, dataset, 1)
    me.pin(1)
    start = time.monotonic()
    with pytest.raises(CacheFullError, match=r"after waiting 0.3s.*by other readers"):
        me.reserve(2, blocking_reader=True)
    assert time.monotonic() - start < 3


def test_a_blocked_reader_may_evict_prefetch_pins(tmp_path, dataset):
    me = open_entry(tmp_path, dataset, chunks_room=2)
    other = open_entry(tmp_path, dataset, chunks_room=2)
    for k in range(2):
        put(other, dataset, k)
        other.pin(k, ahead=True)
    assert me.reserve(2, blocking_reader=False) is None  # another prefetch may not
    put(me, dataset, 2)
    assert present(me) == [1, 2] and on_disk(me) <= me.max_bytes


def test_chunks_per_reader_says_what_the_budget_holds(tmp_path, dataset):
    entry = open_entry(tmp_path, dataset, chunks_room=6)
    chunk = max(entry.size_of(k) for k in range(8))
    assert entry.chunks_per_reader(1) == 6 * entry.size_of(0) // chunk
    assert entry.chunks_per_reader(2) == entry.chunks_per_reader(1) // 2
    assert entry.chunks_per_reader(7) == 0
    assert entry.chunks_per_reader(3, chunk_bytes=entry.size_of(0) // 2) == 4
    index = read_index(str(dataset / "index.json"))
    unbounded = CacheEntry.open(str(tmp_path / "cache" / "ds" / "u"), index, b"{}", None, StorageSettings())
    assert unbounded.chunks_per_reader(4) is None


def test_a_prefetch_evicts_nothing_unless_that_makes_room(tmp_path, dataset):
    entry = open_entry(tmp_path, dataset, chunks_room=2)
    put(entry, dataset, 0)
    put(entry, dataset, 1)
    entry.pin(1)
    tmp = entry.reserve(2, blocking_reader=False)
    assert tmp is not None and present(entry) == [1]
    entry.discard(tmp)


def test_markers_of_dead_processes_are_cleaned_and_release_their_chunks(tmp_path, dataset):
    entry = open_entry(tmp_path, dataset, chunks_room=2)
    put(entry, dataset, 0)
    put(entry, dataset, 1)
    ghost = dead_owner()
    assert not owner_alive(ghost)
    for k in (0, 1):
        open(os.path.join(entry.path, META, "refs", f"{k}.{ghost}"), "w").close()
    half_written = os.path.join(entry.path, META, "tmp", f"2.{ghost}")
    with open(half_written, "wb") as f:
        f.write(b"partial")
    put(entry, dataset, 2)  # a crashed reader's pins and download do not block the cache
    assert os.listdir(os.path.join(entry.path, META, "refs")) == []
    assert not os.path.exists(half_written)
    assert entry.is_published(2) and on_disk(entry) <= entry.max_bytes


def test_owners_on_other_hosts_are_presumed_alive():
    assert owner_alive(current_owner())
    assert owner_alive("1@some-other-host")


def test_waiting_for_another_download_times_out_naming_the_url(tmp_path, dataset):
    entry = open_entry(tmp_path, dataset, chunks_room=2, wait_timeout_s=0.2)
    errors = []

    def contender() -> None:
        start = time.monotonic()
        try:
            with entry.download_lock(0, "s3://bucket/ds/chunk-0-0.bin"):
                pass
        except CacheTimeoutError as err:
            errors.append((err, time.monotonic() - start))

    with entry.download_lock(0, "s3://bucket/ds/chunk-0-0.bin"):
        thread = threading.Thread(target=contender)
        thread.start()
        thread.join()
    [(err, waited)] = errors
    assert "s3://bucket/ds/chunk-0-0.bin" in str(err) and waited < 2


def test_other_versions_are_removed_only_without_live_users(tmp_path, dataset):
    old = open_entry(tmp_path, dataset, chunks_room=2, version="old")
    put(old, dataset, 0)
    in_use = open_entry(tmp_path, dataset, chunks_room=2, version="in-use")
    users = os.path.join(old.path, META, "users")
    for name in os.listdir(users):
        os.unlink(os.path.join(users, name))
    open(os.path.join(users, dead_owner()), "w").close()
    open_entry(tmp_path, dataset, chunks_room=2, version="new")
    assert not os.path.exists(old.path)  # its only user is dead
    assert os.path.exists(in_use.path)  # this process still uses it
