"""Every format over real S3 (moto's server on loopback) through the bounded cache: storage fetches, verifies
and evicts from the neutral shard table alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import s3fs
from support.formats import mds_sample, write_mds, write_parquet, write_wds
from support.resume import check_resume

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming.formats import wds
from lit_streaming.storage.errors import ChunkIntegrityError


def _upload(local: str, url: str, options: dict) -> None:
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": options["endpoint_url"]}, key="testing", secret="testing"
    )
    root = url.removeprefix("s3://")
    for name in sorted(os.listdir(local)):
        fs.put_file(os.path.join(local, name), f"{root}/{name}")


def _cached(ds: StreamingDataset) -> list[str]:
    return sorted(p.name for p in Path(ds.cache_path).iterdir() if p.is_file() and p.name != "index.json")


def test_mds_over_s3_within_the_cache_bound(tmp_path, s3_bucket):
    bucket, options = s3_bucket
    local = str(tmp_path / "mds")
    index = write_mds(local, 30, compression="zstd", hashes=["md5", "sha1"], size_limit=1 << 14)
    biggest = max(s["zip_data"]["bytes"] for s in index["shards"])
    url = f"{bucket}/mds"
    _upload(local, url, options)
    budget = 4 * biggest + 4096
    ds = StreamingDataset(
        url,
        cache_dir=str(tmp_path / "cache"),
        storage_options=options,
        max_cache_size=budget,
        shuffle_window=1,
    )
    assert [s["id"] for s in ds] == list(range(30))
    assert ds[29]["text"] == mds_sample(29)["text"]
    assert sum(os.path.getsize(Path(ds.cache_path, n)) for n in _cached(ds)) <= budget

    def loader():  # shuffled, through the same bounded cache
        return StreamingDataLoader(
            StreamingDataset(
                url,
                cache_dir=str(tmp_path / "cache"),
                storage_options=options,
                max_cache_size=budget,
                shuffle=True,
                shuffle_window=1,
            ),
            batch_size=4,
            collate_fn=lambda batch: [s["id"] for s in batch],  # samples of several shapes
        )

    check_resume(loader, break_epoch=0, break_after=3)


def test_wds_over_s3_scans_once_then_reads_the_kept_index(tmp_path, s3_bucket, monkeypatch):
    bucket, options = s3_bucket
    local = str(tmp_path / "wds")
    write_wds(local, 20, maxcount=6)
    url = f"{bucket}/wds"
    _upload(local, url, options)
    cache = str(tmp_path / "cache")
    ds = StreamingDataset(url, cache_dir=cache, storage_options=options)
    assert ds.chunk_lengths.tolist() == [6, 6, 6, 2]
    assert [s["cls"] for s in ds] == list(range(20))
    monkeypatch.setattr(wds, "scan_file", lambda *a: pytest.fail("scanned again"))
    assert StreamingDataset(url, cache_dir=cache, storage_options=options)[19]["cls"] == 19


def test_parquet_over_s3(tmp_path, s3_bucket):
    bucket, options = s3_bucket
    local = str(tmp_path / "pq")
    rows = write_parquet(local, 2, 9, row_group_size=4)
    url = f"{bucket}/pq"
    _upload(local, url, options)
    ds = StreamingDataset(url, cache_dir=str(tmp_path / "cache"), storage_options=options)
    assert sorted(s["id"] for s in ds) == sorted(r["id"] for r in rows)


def test_a_corrupt_mds_shard_on_s3_is_refused_naming_it(tmp_path, s3_bucket):
    bucket, options = s3_bucket
    local = tmp_path / "bad"
    index = write_mds(str(local), 12, compression=None, hashes=["sha1"], size_limit=1 << 13)
    name = index["shards"][0]["raw_data"]["basename"]
    data = bytearray((local / name).read_bytes())
    data[-1] ^= 0xFF
    (local / name).write_bytes(bytes(data))
    url = f"{bucket}/bad"
    _upload(str(local), url, options)
    ds = StreamingDataset(url, cache_dir=str(tmp_path / "cache"), storage_options=options)
    with pytest.raises(ChunkIntegrityError, match=rf"{url}/{name}.*checksum is sha1:"):
        ds[0]
