"""A flaky network and corrupt or hostile data behind a real S3-protocol server (moto on loopback).

A fault-injecting HTTP proxy sits between the client and the server: about 10% of requests get a 500, a reset
connection, a response cut off half-way, or a delay past the client's read timeout. An epoch still yields
exactly the same samples; a server that keeps failing gives a bounded wait and an error naming the URL.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from support.storage import (
    FaultProxy,
    chunk_names,
    expected_sample,
    flip_byte,
    forge_offsets,
    rewrite_index,
    set_checksum,
    upload,
    write_dataset,
)
from torch.utils.data import DataLoader

from lit_streaming import StreamingDataset
from lit_streaming.format.chunk import CorruptChunkError
from lit_streaming.format.index import InvalidIndexError
from lit_streaming.format.serializers import PickleNotAllowedError
from lit_streaming.formats.litdata import read_bound_index
from lit_streaming.storage import (
    ChunkIntegrityError,
    DownloadError,
    StorageSettings,
    open_source,
)

# Client-side retries off and a short read timeout, so that injected faults reach our own retry layer.
STRICT_CLIENT = {
    "config_kwargs": {"retries": {"total_max_attempts": 1}, "read_timeout": 0.3, "connect_timeout": 1}
}


def collate_ids(batch: list[dict]) -> list[int]:
    return [sample["i"] for sample in batch]


@pytest.fixture()
def s3_dataset(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    local = write_dataset(tmp_path / "ds", n=100, chunk_size=2)
    upload(local, f"{bucket}/ds", options)
    return f"{bucket}/ds", options, local


def test_an_epoch_through_a_faulty_network_yields_exactly_the_same_samples(s3_server, s3_dataset, tmp_path):
    url, options, _ = s3_dataset
    with FaultProxy(s3_server, rate=0.1, seed=3, delay_s=0.6) as proxy:
        flaky = dict(options, endpoint_url=proxy.url, **STRICT_CLIENT)
        ds = StreamingDataset(url, storage_options=flaky, cache_dir=str(tmp_path / "a"), shuffle=True)
        assert sorted((s["i"], s["x"]) for s in ds) == [(i, expected_sample(i)["x"]) for i in range(100)]
        ds = StreamingDataset(url, storage_options=flaky, cache_dir=str(tmp_path / "b"), shuffle=True, seed=7)
        loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_ids)
        assert sorted(i for batch in loader for i in batch) == list(range(100))
    assert sum(proxy.faults.values()) >= 6 and set(proxy.faults) == {"500", "reset", "cut", "delay"}


def test_our_retries_log_each_transient_failure(s3_server, s3_dataset, tmp_path, caplog):
    url, options, local = s3_dataset
    with FaultProxy(s3_server, rate=1.0, kinds=("500",), only_paths_containing=".bin", max_faults=2) as proxy:
        flaky = dict(options, endpoint_url=proxy.url, **STRICT_CLIENT)
        ds = StreamingDataset(url, storage_options=flaky, cache_dir=str(tmp_path))
        with caplog.at_level(logging.WARNING, logger="lit_streaming.storage"):
            assert ds[0] == expected_sample(0)
    name = chunk_names(local)[0]
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"Retrying {url}/{name}")]
    assert len(retries) == 2 and "attempt 2 of 5 failed" in retries[1]


def test_retries_are_bounded_and_the_error_names_the_url(s3_server, s3_dataset, tmp_path):
    url, options, local = s3_dataset
    settings = StorageSettings(attempts=3, backoff_s=0.01)
    with FaultProxy(s3_server, rate=1.0, kinds=("500",)) as proxy:
        source = open_source(
            url, tmp_path, dict(options, endpoint_url=proxy.url, **STRICT_CLIENT), None, settings
        )
        start = time.monotonic()
        with pytest.raises(DownloadError, match=f"Giving up on {url}/index.json after 3 attempts"):
            read_bound_index(source)
        assert time.monotonic() - start < 5
    with FaultProxy(s3_server, rate=1.0, kinds=("500",), only_paths_containing=".bin") as proxy:
        source = open_source(
            url, tmp_path, dict(options, endpoint_url=proxy.url, **STRICT_CLIENT), None, settings
        )
        index = read_bound_index(source)
        start = time.monotonic()
        name = chunk_names(local)[0]
        with pytest.raises(DownloadError, match=f"{url}/{name}"):
            source.chunk_path(0, index.chunks[0])
        assert time.monotonic() - start < 5


# A server that trickles bytes: the client's own timeouts (per socket read) never fire, ours must.
TRICKLE_SETTINGS = dict(
    attempts=2, backoff_s=0.01, stall_timeout_s=5, min_throughput_bps=1000, throughput_grace_s=1.5
)


def test_a_trickling_server_fails_the_download_naming_the_url(s3_server, s3_dataset, tmp_path):
    url, options, local = s3_dataset
    settings = StorageSettings(**TRICKLE_SETTINGS)
    no_client_retries = {
        "config_kwargs": {"retries": {"total_max_attempts": 1}}
    }  # default read_timeout (60 s)
    with FaultProxy(s3_server, rate=1.0, kinds=("trickle",), trickle_s=0.5) as proxy:
        source = open_source(
            url, tmp_path, dict(options, endpoint_url=proxy.url, **no_client_retries), None, settings
        )
        start = time.monotonic()
        with pytest.raises(DownloadError, match=rf"Giving up on {url}/index.json after 2 attempts.*stalled"):
            read_bound_index(source)
        assert time.monotonic() - start < 10
        assert proxy.faults["trickle"] == 2
    with FaultProxy(s3_server, rate=1.0, kinds=("trickle",), only_paths_containing=".bin") as proxy:
        source = open_source(
            url, tmp_path, dict(options, endpoint_url=proxy.url, **no_client_retries), None, settings
        )
        index = read_bound_index(source)
        name = chunk_names(local)[0]
        start = time.monotonic()
        with pytest.raises(DownloadError, match=rf"{url}/{name} after 2 attempts.*slower than the minimum"):
            source.chunk_path(0, index.chunks[0])
        assert time.monotonic() - start < 10


def test_a_stalled_download_is_retried(s3_server, s3_dataset, tmp_path):
    url, options, _ = s3_dataset
    settings = StorageSettings(**dict(TRICKLE_SETTINGS, attempts=3))
    with FaultProxy(s3_server, rate=1.0, kinds=("trickle",), only_paths_containing=".bin", max_faults=2) as p:
        source = open_source(url, tmp_path, dict(options, endpoint_url=p.url), None, settings)
        index = read_bound_index(source)
        path = source.chunk_path(0, index.chunks[0])
        assert p.faults["trickle"] == 2
    with open(path, "rb") as f:
        assert len(f.read()) == index.chunks[0].file_bytes


# ---- corrupt and hostile data on the server ------------------------------------------------------------------
def open_remote(folder: Path, s3_bucket, tmp_path, **kwargs) -> StreamingDataset:
    bucket, options = s3_bucket
    upload(folder, f"{bucket}/bad", options)
    return StreamingDataset(
        f"{bucket}/bad", storage_options=options, cache_dir=str(tmp_path / "cache"), **kwargs
    )


def read_all_quickly(ds: StreamingDataset) -> None:
    start = time.monotonic()
    try:
        list(ds)
    finally:
        assert time.monotonic() - start < 5


@pytest.fixture()
def small(tmp_path):
    return write_dataset(tmp_path / "small", n=12, chunk_size=4)


def test_truncated_chunk(s3_bucket, tmp_path, small):
    name = chunk_names(small)[1]
    (small / name).write_bytes((small / name).read_bytes()[:-10])
    with pytest.raises(
        ChunkIntegrityError, match=rf"s3://.*/bad/{name} \(chunk 1\) has \d+ bytes, index.json says"
    ):
        read_all_quickly(open_remote(small, s3_bucket, tmp_path))


def test_flipped_bytes(s3_bucket, tmp_path, small):
    name = chunk_names(small)[2]
    flip_byte(small / name)
    with pytest.raises(
        ChunkIntegrityError, match=rf"s3://.*/bad/{name} \(chunk 2\) is corrupt: its checksum"
    ):
        read_all_quickly(open_remote(small, s3_bucket, tmp_path))


def test_forged_header_offsets(s3_bucket, tmp_path, small):
    name = chunk_names(small)[0]
    forge_offsets(small / name)
    set_checksum(small, name)
    with pytest.raises(CorruptChunkError, match=rf"{name} \(chunk 0 of s3://.*\) has invalid offsets"):
        read_all_quickly(open_remote(small, s3_bucket, tmp_path))


def test_filename_escaping_the_dataset(s3_bucket, tmp_path, small):
    def edit(index: dict) -> None:
        index["chunks"][0]["filename"] = "../other-dataset/chunk-0-0.bin"

    rewrite_index(small, edit)
    with pytest.raises(InvalidIndexError, match=r"s3://.*/bad/index.json.*escapes the dataset folder"):
        open_remote(small, s3_bucket, tmp_path)


def test_pickle_leaves_need_opt_in(s3_bucket, tmp_path):
    folder = write_dataset(tmp_path / "pickled", n=4, chunk_size=2)

    def edit(index: dict) -> None:  # declare a pickle leaf: refused before any chunk is read
        index["config"]["data_format"] = ["pickle"]
        index["config"].pop("data_spec", None)

    rewrite_index(folder, edit)
    with pytest.raises(PickleNotAllowedError, match=r"s3://.*/bad stores pickled leaves.*allow_pickle=True"):
        open_remote(folder, s3_bucket, tmp_path)
