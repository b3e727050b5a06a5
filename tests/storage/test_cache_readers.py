"""Several readers of one cache entry: pins per reader, markers of ended readers, damaged cached chunks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from support.storage import (
    chunk_names,
    expected_sample,
    flip_byte,
    tree_bytes,
    upload,
    write_dataset,
)
from torch.utils.data import DataLoader

from lit_streaming import CombinedStreamingDataset, StreamingDataset
from lit_streaming.storage import ChunkIntegrityError
from lit_streaming.storage.cache_entry import META
from lit_streaming.storage.owners import current_owner, owner_alive, process_start


def collate_ids(batch: list[dict]) -> list[int]:
    return [sample["i"] for sample in batch]


@pytest.fixture(params=["memory", "local"])
def remote_url(request, tmp_path, memory_url):
    """A dataset of 60 chunks behind a cached URL: ``memory://`` or ``local:`` (a network-drive folder)."""
    dataset = write_dataset(tmp_path / "ds", n=120, chunk_size=2, size=2000)
    if request.param == "memory":
        upload(dataset, memory_url)
        return memory_url, dataset
    return f"local:{dataset}", dataset


def markers(cache_path: str, sub: str) -> list[str]:
    return sorted(os.listdir(os.path.join(cache_path, META, sub)))


# ---- item 2: one URL, several readers in one process ---------------------------------------------------------
def test_two_datasets_over_one_url_in_one_process_keep_their_own_pins(tmp_path, remote_url):
    url, dataset = remote_url
    cache = str(tmp_path / "cache")
    budget = tree_bytes(str(dataset)) // 3  # about 20 chunks: eviction runs all the time
    a = StreamingDataset(url, cache_dir=cache, max_cache_size=budget, shuffle=True, shuffle_window=2, seed=1)
    b = StreamingDataset(url, cache_dir=cache, max_cache_size=budget, shuffle=True, shuffle_window=2, seed=2)
    assert a.cache_path == b.cache_path
    seen_a, seen_b = [], []
    for x, y in zip(a, b, strict=True):  # interleaved: each one's releases must not unpin the other's chunks
        seen_a.append(x["i"])
        seen_b.append(y["i"])
    assert sorted(seen_a) == sorted(seen_b) == list(range(120))
    assert seen_a != seen_b


def test_one_url_twice_in_a_combined_dataset(tmp_path, remote_url):
    url, dataset = remote_url
    cache = str(tmp_path / "cache")
    budget = tree_bytes(str(dataset)) // 3
    parts = [
        StreamingDataset(url, cache_dir=cache, max_cache_size=budget, shuffle=True, shuffle_window=2, seed=s)
        for s in (1, 2)
    ]
    combined = CombinedStreamingDataset(parts, iterate_over_all=True)
    ids = [sample["i"] for sample in combined]
    assert sorted(ids) == sorted(list(range(120)) * 2)


# ---- item 4: markers of ended readers ------------------------------------------------------------------------
def test_ended_workers_leave_no_markers_behind(tmp_path, memory_url):
    dataset = write_dataset(tmp_path / "ds", n=24, chunk_size=2)
    upload(dataset, memory_url)
    ds = StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"), shuffle=True)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_ids, persistent_workers=False)
    for epoch in range(4):  # after the first epoch nothing needs downloading, so no scan sweeps the markers
        ds.set_epoch(epoch)
        assert sorted(i for batch in loader for i in batch) == list(range(24))
        entry = ds.cache_path
        assert markers(entry, "refs") == [] and markers(entry, "ahead") == [] and markers(entry, "tmp") == []
        users = markers(entry, "users")
        assert len(users) == 1 and users[0].startswith(current_owner() + "~"), users  # this process only


def test_markers_of_dead_readers_are_dropped_when_a_reader_joins(tmp_path, memory_url):
    dataset = write_dataset(tmp_path / "ds", n=8, chunk_size=2)
    upload(dataset, memory_url)
    cache = str(tmp_path / "cache")
    code = (
        "import os, sys; from lit_streaming import StreamingDataset;"
        f"ds = StreamingDataset({memory_url!r}, cache_dir={cache!r});"
        "[ds[i] for i in range(8)]; os._exit(0)"  # killed: no finalizer runs
    )
    # memory:// lives in one process: a child sees nothing, so it reads the folder through local: instead.
    code = code.replace(repr(memory_url), repr(f"local:{dataset}"))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    ds = StreamingDataset(f"local:{dataset}", cache_dir=cache)
    entry = ds.cache_path
    assert markers(entry, "refs") == []  # the dead child's pins are gone
    assert all(name.startswith(current_owner()) for name in markers(entry, "users"))


def test_a_reused_pid_does_not_keep_a_stale_marker_alive():
    me = current_owner()
    assert owner_alive(me) and owner_alive(f"{me}~r7")
    pid_part, _, host = me.partition("@")
    pid = pid_part.partition("-")[0]
    start = process_start(int(pid))
    assert start is not None  # Linux: the owner id carries the start time
    assert not owner_alive(f"{pid}-{int(start) + 1}@{host}")  # same pid, another process's start time
    assert not owner_alive(f"{pid}-{int(start) + 1}@{host}~r0")


# ---- item 3: a damaged chunk in the cache ----------------------------------------------------------------------
def test_a_flipped_byte_in_a_cached_chunk_is_repaired_not_served(tmp_path, memory_url, caplog):
    dataset = write_dataset(tmp_path / "ds", n=12, chunk_size=4)
    upload(dataset, memory_url)
    cache = str(tmp_path / "cache")
    first = StreamingDataset(memory_url, cache_dir=cache)
    assert list(first) == [expected_sample(i) for i in range(12)]
    name = chunk_names(dataset)[1]
    cached = os.path.join(first.cache_path, name)
    flip_byte_in_payload(cached)
    later = StreamingDataset(memory_url, cache_dir=cache)  # another process (or job) opens the entry
    with caplog.at_level(logging.WARNING, logger="lit_streaming.storage"):
        assert list(later) == [expected_sample(i) for i in range(12)]
    assert f"Downloading {memory_url}/{name} again: the cached copy is damaged" in caplog.text
    with open(cached, "rb") as f, open(dataset / name, "rb") as g:
        assert f.read() == g.read()  # repaired in the cache for every later reader


def test_a_truncated_cached_chunk_is_repaired(tmp_path, memory_url):
    dataset = write_dataset(tmp_path / "ds", n=12, chunk_size=4)
    upload(dataset, memory_url)
    cache = str(tmp_path / "cache")
    first = StreamingDataset(memory_url, cache_dir=cache)
    first[0]
    cached = os.path.join(first.cache_path, chunk_names(dataset)[0])
    with open(cached, "r+b") as f:
        f.truncate(os.path.getsize(cached) - 7)
    for _ in range(2):  # every later job reads the right samples
        assert [StreamingDataset(memory_url, cache_dir=cache)[i] for i in range(4)] == [
            expected_sample(i) for i in range(4)
        ]


def test_a_cached_chunk_that_is_also_bad_at_the_source_is_an_error(tmp_path, memory_url):
    dataset = write_dataset(tmp_path / "ds", n=12, chunk_size=4)
    upload(dataset, memory_url)
    cache = str(tmp_path / "cache")
    first = StreamingDataset(memory_url, cache_dir=cache)
    first[0]
    name = chunk_names(dataset)[0]
    flip_byte_in_payload(os.path.join(first.cache_path, name))
    flip_byte(dataset / name)
    upload(dataset, memory_url)  # the same index.json: the same cache entry
    with pytest.raises(ChunkIntegrityError, match=rf"{memory_url}/{name} \(chunk 0\) is corrupt"):
        StreamingDataset(memory_url, cache_dir=cache)[0]


def flip_byte_in_payload(path: str) -> None:
    """Flip a byte inside a sample's payload (the header stays valid: only the checksum can tell)."""
    with open(path, "r+b") as f:
        f.seek(-5, os.SEEK_END)
        byte = f.read(1)
        f.seek(-5, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
