"""Outputs on the loopback S3 server: chunks uploaded as they are finished, index published last, resume."""

from __future__ import annotations

import functools
import logging

import fsspec
import pytest
from support.storage import FaultProxy
from support.writer import (
    calls,
    chunk_files,
    download,
    kill_once,
    read_samples,
    sample,
    samples_of,
    write_files,
)

from lit_streaming_writer import DatasetExistsError, WorkerError, map, optimize

NO_CLIENT_RETRIES = {"config_kwargs": {"retries": {"total_max_attempts": 1}, "connect_timeout": 2}}


def _names(url: str, options: dict) -> list[str]:
    fs, root = fsspec.core.url_to_fs(url, **options)
    fs.invalidate_cache()
    return sorted(p.removeprefix(root + "/") for p in fs.find(root))


def test_optimize_to_s3_with_two_workers(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    url = f"{bucket}/data"
    assert optimize(samples_of, range(30), url, chunk_size=4, num_workers=2, storage_options=options) == url
    optimize(samples_of, range(30), str(tmp_path / "local"), chunk_size=4, num_workers=2)
    got = download(url, options, tmp_path / "downloaded")
    assert read_samples(got) == [{"id": i, "k": k} for i in range(30) for k in range(3)]
    assert chunk_files(got) == chunk_files(tmp_path / "local")
    assert _names(url, options) == sorted([*chunk_files(got), "index.json"])


def test_s3_modes(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    url = f"{bucket}/modes"
    optimize(sample, range(10), url, chunk_size=3, num_workers=2, storage_options=options)
    with pytest.raises(DatasetExistsError):
        optimize(sample, range(11), url, chunk_size=3, num_workers=2, storage_options=options)
    optimize(sample, range(10), url, chunk_size=3, num_workers=2, storage_options=options)  # a finished rerun
    optimize(sample, range(10, 15), url, chunk_size=3, num_workers=2, storage_options=options, mode="append")
    assert read_samples(download(url, options, tmp_path / "a")) == [sample(i) for i in range(15)]
    optimize(sample, range(4), url, chunk_size=3, num_workers=2, storage_options=options, mode="overwrite")
    got = download(url, options, tmp_path / "b")
    assert read_samples(got) == [sample(i) for i in range(4)]
    assert _names(url, options) == sorted([*chunk_files(got), "index.json"])


def test_s3_resume_after_a_killed_worker(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    url, log = f"{bucket}/resume", tmp_path / "log"
    fn = functools.partial(kill_once, at=50, marker=str(tmp_path / "killed"), log=str(log))
    with pytest.raises(WorkerError, match="died"):
        optimize(fn, range(60), url, chunk_size=3, num_workers=2, storage_options=options)
    assert "index.json" not in _names(url, options)
    optimize(fn, range(60), url, chunk_size=3, num_workers=2, storage_options=options)
    assert read_samples(download(url, options, tmp_path / "d")) == [sample(i) for i in range(60)]
    assert calls(log)[30] == 1


def test_map_to_s3_keeps_relative_paths(s3_bucket):
    bucket, options = s3_bucket
    url = f"{bucket}/files"
    map(write_files, range(12), url, num_workers=2, storage_options=options)
    assert _names(url, options) == sorted(f"part-{i % 3}/{i}.txt" for i in range(12))
    fs, root = fsspec.core.url_to_fs(url, **options)
    assert fs.cat_file(f"{root}/part-1/7.txt") == b"input 7\n"


def test_transient_upload_failures_are_retried(s3_server, s3_bucket, tmp_path, caplog):
    bucket, options = s3_bucket
    url = f"{bucket}/flaky"
    with FaultProxy(s3_server, rate=1.0, kinds=("500", "reset"), seed=1, max_faults=4) as proxy:
        flaky = dict(options, endpoint_url=proxy.url, **NO_CLIENT_RETRIES)
        with caplog.at_level(logging.WARNING, logger="lit_streaming.storage"):
            assert optimize(sample, range(12), url, chunk_size=3, num_workers=1, storage_options=flaky) == url
    assert sum(proxy.faults.values()) == 4
    assert read_samples(download(url, options, tmp_path / "got")) == [sample(i) for i in range(12)]
    assert any(r.getMessage().startswith(f"Retrying {url}") for r in caplog.records)


def test_a_server_that_keeps_failing_fails_the_job_naming_the_url(s3_server, s3_bucket):
    bucket, options = s3_bucket
    url = f"{bucket}/down"
    with FaultProxy(s3_server, rate=1.0, kinds=("500",), only_paths_containing=".bin") as proxy:
        flaky = dict(options, endpoint_url=proxy.url, **NO_CLIENT_RETRIES)
        with pytest.raises(WorkerError, match=rf"Giving up on {url} \(chunk-0-0.bin\) after 5 attempts"):
            optimize(sample, range(6), url, chunk_size=3, num_workers=1, storage_options=flaky)
