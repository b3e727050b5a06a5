"""The cache entry's bookkeeping: the disk bound, pins, in-flight accounting, dead owners, lock timeouts."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from _storage_support import tree_bytes, write_dataset

from lit_streaming.format.index import read_index
from lit_streaming.storage.cache_entry import META, CacheEntry
from lit_streaming.storage.errors import CacheTimeoutError
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


def test_eviction_keeps_the_bound_and_spares_pinned_chunks(tmp_path, dataset):
    entry = open_entry(tmp_path, dataset, chunks_room=3)
    for k in range(3):
        put(entry, dataset, k)
        time.sleep(0.01)  # distinct mtimes: least recently used goes first
    entry.pin(0)
    put(entry, dataset, 3)
    assert present(entry) == [0, 2, 3]  # chunk 1 was the least recently used unpinned one
    assert entry.usage() <= entry.max_bytes
    assert tree_bytes(entry.path) <= entry.max_bytes
    entry.unpin(0)
    put(entry, dataset, 4)
    assert present(entry) == [0, 3, 4]  # pinning 0 used it after 2 was published


def test_an_in_flight_download_counts_at_full_size(tmp_path, dataset):
    entry = open_entry(tmp_path, dataset, chunks_room=2)
    before = entry.usage()
    tmp = entry.reserve(0, blocking_reader=False)
    assert os.path.getsize(tmp) == 0
    assert entry.usage() == before + entry.size_of(0)
    entry.discard(tmp)
    assert entry.usage() == before


def test_a_prefetch_never_evicts_pins_but_a_blocked_reader_proceeds_with_a_warning(tmp_path, dataset, caplog):
    entry = open_entry(tmp_path, dataset, chunks_room=2)
    for k in range(2):
        put(entry, dataset, k)
        entry.pin(k)
    assert entry.reserve(2, blocking_reader=False) is None
    with caplog.at_level(logging.WARNING, logger="lit_streaming.storage"):
        tmp = entry.reserve(2, blocking_reader=True)
    assert tmp is not None and present(entry) == [0, 1]
    assert "smaller than the chunks readers hold open" in caplog.text
    entry.discard(tmp)


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
    assert entry.is_published(2) and entry.usage() <= entry.max_bytes


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
