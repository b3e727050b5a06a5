"""Cache locations: the root's precedence, one folder per dataset URL and endpoint, one per index version."""

from __future__ import annotations

import os

from lit_streaming.storage.cache_paths import CACHE_DIR_ENV, cache_root, dataset_dirname, dataset_version


def test_root_argument_beats_environment_beats_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    assert cache_root(None) == str(tmp_path / "home" / ".cache" / "lit_streaming")
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env"))
    assert cache_root(None) == str(tmp_path / "env")
    assert cache_root(tmp_path / "arg") == str(tmp_path / "arg")
    assert cache_root("~/x") == os.path.join(str(tmp_path / "home"), "x")


def test_dataset_folders_differ_by_url_and_endpoint_and_stay_readable():
    a = dataset_dirname("s3://bucket/datasets/train", {})
    assert a.startswith("datasets-train-")
    assert a != dataset_dirname("s3://bucket/datasets/val", {})
    assert a != dataset_dirname("s3://bucket/datasets/train", {"endpoint_url": "http://127.0.0.1:9000"})
    assert dataset_dirname("s3://bucket/datasets/train", {"client_kwargs": {"endpoint_url": "http://e"}}) == (
        dataset_dirname("s3://bucket/datasets/train", {"endpoint_url": "http://e"})
    )
    assert "/" not in dataset_dirname("local:/mnt/nfs/../x y", {})


def test_version_is_a_hash_of_the_index_bytes():
    assert dataset_version(b'{"chunks": []}') == dataset_version(b'{"chunks": []}')
    assert dataset_version(b'{"chunks": []}') != dataset_version(b'{"chunks": [] }')
