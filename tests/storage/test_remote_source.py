"""Remote sources without a server: ``memory://`` (fsspec's in-process file system) and ``local:/path``."""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections import Counter

import fsspec
import pytest
from support.storage import (
    CacheMonitor,
    Sample,
    chunk_names,
    expected_sample,
    rewrite_index,
    tree_bytes,
    upload,
    write_dataset,
)

from lit_streaming import StreamingDataset
from lit_streaming.format.index import InvalidIndexError
from lit_streaming.formats.litdata import read_bound_index
from lit_streaming.storage import (
    CACHE_DIR_ENV,
    CacheTimeoutError,
    LocalSource,
    RemoteSource,
    StorageSettings,
    open_source,
    remote_source,
)
from lit_streaming.storage.cache_entry import META, hold_lock
from lit_streaming_writer import optimize


@pytest.fixture()
def dataset(tmp_path):
    return write_dataset(tmp_path / "ds", n=40, chunk_size=4)


def cached_chunks(source: RemoteSource | StreamingDataset) -> list[str]:
    return sorted(name for name in os.listdir(source.cache_path) if name.endswith(".bin"))


def test_locations_pick_their_source(tmp_path, dataset, monkeypatch):
    assert isinstance(open_source(dataset), LocalSource)
    assert isinstance(open_source(f"file://{dataset}"), LocalSource)
    assert open_source(f"file://{dataset}").root == str(dataset)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env-cache"))
    for url in (f"local:{dataset}", "memory://bucket/ds", "s3://bucket/ds"):
        source = open_source(url)
        assert isinstance(source, RemoteSource) and source.cache_root == str(tmp_path / "env-cache")
    assert open_source("s3://bucket/ds", cache_dir=tmp_path / "arg").cache_root == str(tmp_path / "arg")


def test_local_prefix_copies_chunks_into_the_cache(tmp_path, dataset):
    ds = StreamingDataset(f"local:{dataset}", cache_dir=str(tmp_path / "cache"))
    assert [s for s in ds] == [expected_sample(i) for i in range(40)]
    assert ds.cache_path.startswith(str(tmp_path / "cache"))
    assert cached_chunks(ds) == sorted(chunk_names(dataset))


def test_random_access_downloads_only_the_needed_chunk(tmp_path, dataset, memory_url):
    upload(dataset, memory_url)
    ds = StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"))
    assert ds[37] == expected_sample(37)
    assert cached_chunks(ds) == [chunk_names(dataset)[9]]


def test_prefetch_downloads_ahead_in_reading_order_and_no_further(tmp_path, memory_url):
    dataset = write_dataset(tmp_path / "ds", n=40, chunk_size=2)
    upload(dataset, memory_url)
    source = open_source(memory_url, tmp_path / "cache", settings=StorageSettings(prefetch_chunks=3))
    index = read_bound_index(source)
    order = [7, 3, 12, 0, 19, 5, 8]
    source.prefetch(order)
    source.chunk_path(7, index.chunks[7])
    names = chunk_names(dataset)
    expected = sorted(names[k] for k in order[:4])  # the chunk read, and the next three in reading order
    deadline = time.monotonic() + 5
    while cached_chunks(source) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert cached_chunks(source) == expected


def test_several_epochs_reuse_and_evict_consistently(tmp_path, memory_url):
    dataset = write_dataset(tmp_path / "ds", n=120, chunk_size=2, size=2000)
    upload(dataset, memory_url)
    cache = str(tmp_path / "cache")
    max_cache_size = tree_bytes(str(dataset)) // 3
    ds = StreamingDataset(
        memory_url, cache_dir=cache, max_cache_size=max_cache_size, shuffle=True, shuffle_window=2
    )
    with CacheMonitor(cache, entry=ds.cache_path) as monitor:
        for epoch in range(3):
            ds.set_epoch(epoch)
            assert sorted(s["i"] for s in ds) == list(range(120))
    assert monitor.peak <= max_cache_size


def test_a_pickled_dataset_makes_its_own_client_and_pool(tmp_path, dataset, memory_url, monkeypatch):
    made = Counter()

    def counted(name, make):
        def wrapper(*args, **kwargs):
            made[name] += 1
            return make(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(fsspec.core, "url_to_fs", counted("client", fsspec.core.url_to_fs))
    monkeypatch.setattr(remote_source, "ChunkFetcher", counted("pool", remote_source.ChunkFetcher))
    upload(dataset, memory_url)
    ds = StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"), shuffle=True)
    list(ds)  # starts the fetcher: a thread pool, a client, pins
    before = dict(made)
    assert before["client"] >= 1 and before["pool"] == 1
    clone = pickle.loads(pickle.dumps(ds))
    assert sorted(s["i"] for s in clone) == list(range(40))
    # the clone carried neither: it made one client and one pool of its own
    assert made == Counter(client=before["client"] + 1, pool=2)


def test_one_epoch_stays_within_max_cache_size(tmp_path, memory_url):
    dataset = write_dataset(tmp_path / "big", n=300, chunk_size=2, size=4000)  # 150 chunks of ~8 KB
    upload(dataset, memory_url)
    max_cache_size = tree_bytes(str(dataset)) // 5
    cache = str(tmp_path / "cache")
    ds = StreamingDataset(
        memory_url, cache_dir=cache, max_cache_size=max_cache_size, shuffle=True, shuffle_window=2
    )
    with CacheMonitor(cache, entry=ds.cache_path) as monitor:
        assert sorted(s["i"] for s in ds) == list(range(300))
    assert monitor.samples > 10
    assert 0 < monitor.peak <= max_cache_size


def test_compressed_chunks_stream_from_a_remote_url(tmp_path, memory_url):
    folder = tmp_path / "zstd"
    optimize(Sample(300, "z"), list(range(20)), str(folder), chunk_size=4, num_workers=1, compression="zstd")
    upload(folder, memory_url)
    ds = StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"), max_cache_size=10**6)
    assert list(ds) == [expected_sample(i, 300, "z") for i in range(20)]


def test_chunk_names_may_not_clash_with_the_cache_bookkeeping(tmp_path, dataset, memory_url):
    def edit(index: dict) -> None:
        index["chunks"][0]["filename"] = ".lit_streaming/lock"

    rewrite_index(dataset, edit)
    upload(dataset, memory_url)
    with pytest.raises(InvalidIndexError, match="would overwrite the cache's bookkeeping"):
        StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"))


def test_missing_dataset_names_the_url(tmp_path, memory_url):
    with pytest.raises(InvalidIndexError, match=f"No index.json at {memory_url}/index.json"):
        StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"))


def test_a_stuck_download_elsewhere_times_out_naming_the_chunk(tmp_path, dataset, memory_url):
    upload(dataset, memory_url)
    source = open_source(memory_url, tmp_path / "cache", settings=StorageSettings(wait_timeout_s=0.3))
    index = read_bound_index(source)
    lock = os.path.join(source.cache_path, META, "locks", "0.lock")
    held, done = threading.Event(), threading.Event()

    def other_process() -> None:  # holds chunk 0's download lock, as a hung downloader would
        with hold_lock(lock, 5, "test"):
            held.set()
            done.wait(5)

    thread = threading.Thread(target=other_process)
    thread.start()
    held.wait(5)
    start = time.monotonic()
    try:
        with pytest.raises(CacheTimeoutError, match=f"{memory_url}/{index.chunks[0].filename}"):
            source.chunk_path(0, index.chunks[0])
    finally:
        done.set()
        thread.join()
    assert time.monotonic() - start < 3
    assert source.chunk_path(0, index.chunks[0]).endswith(index.chunks[0].filename)  # later calls retry


def test_storage_settings_reach_the_dataset_and_the_datamodule(tmp_path, dataset, memory_url):
    """``StreamingDataset(storage_settings=...)``: a 0.3 s wait timeout (the default is 15 minutes) makes a
    reader give up on a chunk another downloader holds; ``max_pre_download`` sets its prefetch depth."""
    from lit_streaming.datamodule import DatasetOptions

    upload(dataset, memory_url)
    settings = StorageSettings(wait_timeout_s=0.3, attempts=2)
    ds = StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"), storage_settings=settings)
    lock = os.path.join(ds.cache_path, META, "locks", "0.lock")
    with hold_lock(lock, 5, "test"):
        start = time.monotonic()
        with pytest.raises(CacheTimeoutError):
            ds[0]
        assert time.monotonic() - start < 3
    assert ds[0] == expected_sample(0)
    deeper = StreamingDataset(
        memory_url, cache_dir=str(tmp_path / "cache"), storage_settings=settings, max_pre_download=2
    )
    assert deeper.storage_settings == StorageSettings(wait_timeout_s=0.3, attempts=2, prefetch_chunks=2)
    built = DatasetOptions(storage_settings=settings, cache_dir=str(tmp_path / "cache")).build(
        memory_url, "train", None
    )
    assert built.storage_settings is settings
    with pytest.raises(TypeError, match="must be a StorageSettings"):
        StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"), storage_settings={"attempts": 2})


def test_a_rewritten_dataset_gets_a_new_entry(tmp_path, memory_url):
    cache = str(tmp_path / "cache")
    upload(write_dataset(tmp_path / "v1", n=12, chunk_size=4, tag="v1"), memory_url)
    old = StreamingDataset(memory_url, cache_dir=cache)
    assert old[0]["tag"] == "v1"
    upload(write_dataset(tmp_path / "v2", n=12, chunk_size=4, tag="v2"), memory_url)
    new = StreamingDataset(memory_url, cache_dir=cache)
    assert [s["tag"] for s in new] == ["v2"] * 12
    assert new.cache_path != old.cache_path
    assert os.path.dirname(new.cache_path) == os.path.dirname(old.cache_path)
    assert old[0]["tag"] == "v1"  # still cached, and this process still uses it


def test_storage_options_belong_to_one_dataset(tmp_path):
    """Two datasets at the same URL on differently configured file systems stay apart in one cache root."""
    for tag in ("a", "b"):
        write_dataset(tmp_path / tag / "ds", n=8, chunk_size=4, tag=tag)
    cache = str(tmp_path / "cache")
    a = StreamingDataset("dir://ds", cache_dir=cache, storage_options={"path": str(tmp_path / "a")})
    b = StreamingDataset("dir://ds", cache_dir=cache, storage_options={"path": str(tmp_path / "b")})
    assert [s["tag"] for s in a] == ["a"] * 8
    assert [s["tag"] for s in b] == ["b"] * 8
    assert a.cache_path != b.cache_path  # each read its own files, into its own cache entry
