"""Streaming from a real S3-protocol server (moto on loopback): exact samples, DataLoader workers sharing one
download per chunk, the disk bound on a dataset 5x the cache, and several datasets in one cache root."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from support.storage import (
    CacheMonitor,
    FaultProxy,
    chunk_names,
    expected_sample,
    tree_bytes,
    upload,
    write_dataset,
)
from torch.utils.data import DataLoader

from lit_streaming import StreamingDataset
from lit_streaming.formats.litdata import read_bound_index
from lit_streaming.storage import CacheFullError, ChunkIntegrityError, open_source


@pytest.fixture()
def s3_dataset(s3_bucket, tmp_path):
    """A 60-sample dataset (15 chunks) uploaded to the bucket; yields (url, storage_options, local folder)."""
    bucket, options = s3_bucket
    local = write_dataset(tmp_path / "ds", n=60, chunk_size=4)
    upload(local, f"{bucket}/ds", options)
    return f"{bucket}/ds", options, local


def collate_ids(batch: list[dict]) -> list[int]:
    return [sample["i"] for sample in batch]


def test_iterates_every_sample_exactly(s3_dataset, tmp_path):
    url, options, _ = s3_dataset
    ds = StreamingDataset(
        url, storage_options=options, cache_dir=str(tmp_path / "cache"), max_cache_size="1MB"
    )
    assert list(ds) == [expected_sample(i) for i in range(60)]


def test_random_access_fetches_one_chunk(s3_dataset, tmp_path):
    url, options, local = s3_dataset
    ds = StreamingDataset(url, storage_options=options, cache_dir=str(tmp_path / "cache"))
    assert ds[41] == expected_sample(41)
    cached = sorted(p.name for p in Path(ds.cache_path).glob("*.bin"))
    assert cached == [chunk_names(local)[10]]


def test_dataloader_workers_download_each_chunk_once(s3_server, s3_dataset, tmp_path):
    url, options, local = s3_dataset
    with FaultProxy(s3_server, rate=0.0) as counter:
        ds = StreamingDataset(
            url,
            storage_options=dict(options, endpoint_url=counter.url),
            cache_dir=str(tmp_path / "cache"),
            shuffle=True,
        )
        loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_ids)
        ids = [i for batch in loader for i in batch]
    assert sorted(ids) == list(range(60)) and ids != list(range(60))
    bucket_path = url.removeprefix("s3:/")
    gets = Counter({path: n for (method, path), n in counter.requests.items() if method == "GET"})
    assert {name: gets[f"{bucket_path}/{name}"] for name in chunk_names(local)} == dict.fromkeys(
        chunk_names(local), 1
    )


def test_an_epoch_over_five_times_the_cache_stays_within_max_cache_size(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    local = write_dataset(tmp_path / "big", n=400, chunk_size=2, size=4000)  # 200 chunks of ~8 KB
    upload(local, f"{bucket}/big", options)
    dataset_bytes = tree_bytes(str(local))
    max_cache_size = dataset_bytes // 5
    chunk = max((local / name).stat().st_size for name in chunk_names(local))
    cache = str(tmp_path / "cache")
    ds = StreamingDataset(
        f"{bucket}/big",
        storage_options=options,
        cache_dir=cache,
        max_cache_size=max_cache_size,
        shuffle=True,
        shuffle_window=2,
    )
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_ids)
    with CacheMonitor(cache, entry=ds.cache_path) as monitor, CacheMonitor(cache) as raw:
        ids = [i for batch in loader for i in batch]
    assert sorted(ids) == list(range(400))
    assert monitor.samples > 20 and raw.samples > 20
    # The documented bound: max_cache_size, plus at most one chunk per reader blocked on a download (2 workers).
    assert monitor.peak <= max_cache_size + 2 * chunk
    # A lock-free walk may also count a chunk evicted and another published while it walks.
    assert raw.peak <= max_cache_size + 3 * chunk
    print(
        f"\ncache bound: dataset {dataset_bytes} B, max_cache_size {max_cache_size} B, chunk {chunk} B, "
        f"peak {monitor.peak} B ({monitor.samples} locked samples), {raw.peak} B ({raw.samples} lock-free)"
    )


def test_two_datasets_and_a_rewrite_share_one_cache_root(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    cache = str(tmp_path / "cache")
    for name in ("a", "b"):
        upload(write_dataset(tmp_path / name, n=20, chunk_size=4, tag=name), f"{bucket}/{name}", options)
    a = StreamingDataset(f"{bucket}/a", storage_options=options, cache_dir=cache)
    b = StreamingDataset(f"{bucket}/b", storage_options=options, cache_dir=cache)
    assert [s["tag"] for s in a] == ["a"] * 20
    assert [s["tag"] for s in b] == ["b"] * 20
    opened_before = StreamingDataset(
        f"{bucket}/a", storage_options=options, cache_dir=str(tmp_path / "other")
    )
    assert opened_before[3] == expected_sample(3, tag="a")

    upload(write_dataset(tmp_path / "a2", n=24, chunk_size=4, tag="a2"), f"{bucket}/a", options)
    rewritten = StreamingDataset(f"{bucket}/a", storage_options=options, cache_dir=cache)
    assert list(rewritten) == [expected_sample(i, tag="a2") for i in range(24)]
    assert rewritten.cache_path != a.cache_path
    assert [s["tag"] for s in a] == ["a"] * 20  # the old version stays whole while this process uses it
    assert [s["tag"] for s in b] == ["b"] * 20

    # A dataset object opened before the rewrite that never fetched a chunk now finds the new version's bytes
    # there: they fail its index's checksum instead of mixing versions silently.
    with pytest.raises(ChunkIntegrityError, match="chunk-0-4.bin"):
        opened_before[17]


def test_storage_options_belong_to_each_dataset(s3_server, s3_bucket, tmp_path):
    bucket, options = s3_bucket
    for name in ("direct", "proxied"):
        upload(write_dataset(tmp_path / name, n=8, chunk_size=4, tag=name), f"{bucket}/{name}", options)
    with FaultProxy(s3_server, rate=0.0) as counter:
        proxied = StreamingDataset(
            f"{bucket}/proxied",
            storage_options=dict(options, endpoint_url=counter.url),
            cache_dir=str(tmp_path),
        )
        direct = StreamingDataset(f"{bucket}/direct", storage_options=options, cache_dir=str(tmp_path))
        assert [s["tag"] for s in proxied] + [s["tag"] for s in direct] == ["proxied"] * 8 + ["direct"] * 8
    paths = {path for _, path in counter.requests}
    assert any("/proxied/" in p for p in paths) and not any("/direct/" in p for p in paths)


# ---- the hard bound (issue 12 item 1, storage half) ------------------------------------------------------------
def _read_holding(source, order: list[int], capacity: int, errors) -> None:
    """A reader as the dataset will be: at most ``capacity`` chunks open, the oldest released first."""
    try:
        index = read_bound_index(source) if source.cache_path is None else None
        held: list[int] = []
        source.prefetch(order)
        for k in order:
            while len(held) >= capacity:
                source.release(held.pop(0))
            with open(source.chunk_path(k, None if index is None else index.chunks[k]), "rb") as f:
                f.read(1)
            held.append(k)
    except BaseException as err:  # reported to the parent through the queue
        errors.put(f"{type(err).__name__}: {err}")
        raise


def test_readers_holding_what_chunks_per_reader_allows_never_exceed_the_bound(s3_bucket, tmp_path):
    import multiprocessing
    import random

    bucket, options = s3_bucket
    local = write_dataset(tmp_path / "big", n=80, chunk_size=2, size=20000)  # 40 chunks of ~40 KB
    upload(local, f"{bucket}/big", options)
    chunk = max((local / name).stat().st_size for name in chunk_names(local))
    limit = tree_bytes(str(local)) // 5
    cache = str(tmp_path / "cache")
    source = open_source(f"{bucket}/big", cache, options, limit)
    read_bound_index(source)
    capacity = source.chunks_per_reader(2)
    assert capacity == (limit - (local / "index.json").stat().st_size) // (2 * chunk) and capacity >= 2
    assert source.chunks_per_reader(2, chunk_bytes=chunk // 2) >= 2 * capacity
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    orders = [random.Random(seed).sample(range(40), 40) for seed in (1, 2)]
    readers = [ctx.Process(target=_read_holding, args=(source, order, capacity, errors)) for order in orders]
    with CacheMonitor(cache, entry=source.cache_path) as monitor:
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout=120)
    assert [r.exitcode for r in readers] == [0, 0], errors.get(timeout=1) if not errors.empty() else ""
    assert monitor.samples > 10
    assert monitor.peak <= limit + chunk  # the bound, plus the one chunk a blocked reader may bring in


def test_pins_beyond_the_budget_fail_loudly_instead_of_growing_the_cache(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    local = write_dataset(tmp_path / "big", n=40, chunk_size=2, size=20000)
    upload(local, f"{bucket}/big", options)
    chunk = max((local / name).stat().st_size for name in chunk_names(local))
    limit = (local / "index.json").stat().st_size + 3 * chunk
    source = open_source(f"{bucket}/big", str(tmp_path / "cache"), options, limit)
    index = read_bound_index(source)
    for k in range(4):  # 3 fit, the 4th one past the bound while within it
        source.chunk_path(k, index.chunks[k])
    with pytest.raises(CacheFullError, match=r"is full: max_cache_size=\d+ bytes.*pinned by this reader"):
        source.chunk_path(4, index.chunks[4])
    assert tree_bytes(source.cache_path) <= limit + chunk


def test_the_bound_holds_for_a_dataset_five_times_the_cache_with_the_default_window(s3_bucket, tmp_path):
    """The adversarial run of issue 12 item 1 through a plain torch DataLoader: 1.6 MB budget, ~0.36 MB chunks,
    2 workers, batch 8, the default shuffle window (16 chunks a reader, far more than the budget holds). Each
    worker shrinks its window to the budget (tests/integration/test_cache_window.py checks the warning with
    StreamingDataLoader); the bound holds."""
    bucket, options = s3_bucket
    local = write_dataset(tmp_path / "big", n=44, chunk_size=2, size=180_000)  # 22 chunks of ~0.36 MB
    upload(local, f"{bucket}/big", options)
    chunk = max((local / name).stat().st_size for name in chunk_names(local))
    limit = 1_600_000
    assert tree_bytes(str(local)) > 4.9 * limit
    cache = str(tmp_path / "cache")
    ds = StreamingDataset(
        f"{bucket}/big", storage_options=options, cache_dir=cache, max_cache_size=limit, shuffle=True
    )
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_ids)
    with CacheMonitor(cache, entry=ds.cache_path) as monitor:
        ids = [i for batch in loader for i in batch]
    assert sorted(ids) == list(range(44))
    assert monitor.samples > 10
    assert monitor.peak <= limit + 2 * chunk  # max_cache_size plus one chunk per downloading worker
