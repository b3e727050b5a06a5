"""Corrupt and hostile datasets, local and remote (``memory://``): each fails fast with an error naming the
chunk or file, never a hang, a crash or a garbage sample."""

from __future__ import annotations

import json
import os
import time
from fractions import Fraction

import pytest
from _storage_support import (
    chunk_names,
    flip_byte,
    forge_offsets,
    rewrite_index,
    set_checksum,
    upload,
    write_dataset,
)

from lit_streaming import StreamingDataset
from lit_streaming.format.chunk import CorruptChunkError
from lit_streaming.format.index import InvalidIndexError
from lit_streaming.format.serializers import PickleNotAllowedError
from lit_streaming.storage import ChunkIntegrityError
from lit_streaming_writer import optimize


@pytest.fixture(params=["local", "remote"])
def where(request, tmp_path, memory_url):
    """Opens a (possibly tampered) dataset folder in place, or after uploading it to ``memory://``."""

    def open_dataset(folder, **kwargs) -> StreamingDataset:
        if request.param == "local":
            return StreamingDataset(str(folder), **kwargs)
        upload(folder, memory_url)
        return StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"), **kwargs)

    open_dataset.remote = request.param == "remote"
    return open_dataset


@pytest.fixture()
def dataset(tmp_path):
    return write_dataset(tmp_path / "ds", n=12, chunk_size=4)


def read_all_quickly(ds: StreamingDataset) -> None:
    start = time.monotonic()
    try:
        list(ds)
    finally:
        assert time.monotonic() - start < 5


def test_truncated_chunk(where, dataset):
    name = chunk_names(dataset)[1]
    path = dataset / name
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptChunkError, match=rf"{name}.*bytes, index.json says"):
        read_all_quickly(where(dataset))


def test_flipped_bytes_fail_the_checksum(where, dataset):
    name = chunk_names(dataset)[2]
    flip_byte(dataset / name)
    with pytest.raises(ChunkIntegrityError, match=rf"{name}.*checksum is crc32:\w+, index.json says crc32:"):
        read_all_quickly(where(dataset))


def test_forged_header_offsets(where, dataset):
    name = chunk_names(dataset)[0]
    forge_offsets(dataset / name)
    set_checksum(dataset, name)  # a forger who also fixes the checksum still meets the header check
    with pytest.raises(CorruptChunkError, match=rf"{name}.*invalid offsets"):
        read_all_quickly(where(dataset))


def test_forged_offsets_in_a_litdata_index_without_checksums(where, dataset):
    def drop_checksums(index: dict) -> None:
        for chunk in index["chunks"]:
            chunk.pop("checksum")
            chunk.pop("file_bytes")

    name = chunk_names(dataset)[0]
    forge_offsets(dataset / name)
    rewrite_index(dataset, drop_checksums)
    with pytest.raises(CorruptChunkError, match=rf"{name}.*invalid offsets"):
        read_all_quickly(where(dataset))


@pytest.mark.parametrize("hostile", ["../outside.bin", "a/../../outside.bin", "/etc/passwd", "C:\\evil.bin"])
def test_filenames_escaping_the_dataset_are_refused(where, dataset, hostile):
    def edit(index: dict) -> None:
        index["chunks"][0]["filename"] = hostile

    rewrite_index(dataset, edit)
    with pytest.raises(InvalidIndexError, match="escapes the dataset folder"):
        where(dataset)


def test_pickle_leaves_need_opt_in(where, tmp_path):
    folder = tmp_path / "pickled"
    optimize(Fraction, list(range(1, 9)), str(folder), chunk_size=4, num_workers=1)
    assert json.loads((folder / "index.json").read_text())["config"]["data_format"] == ["pickle"]
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
        where(folder)
    assert list(where(folder, allow_pickle=True)) == [Fraction(i) for i in range(1, 9)]


def test_a_corrupt_chunk_is_never_published_to_the_cache(tmp_path, dataset, memory_url):
    name = chunk_names(dataset)[0]
    flip_byte(dataset / name)
    upload(dataset, memory_url)
    ds = StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"))
    for _ in range(2):  # a second try downloads again rather than trusting a bad copy
        with pytest.raises(ChunkIntegrityError, match=name):
            ds[0]
    assert not os.path.exists(os.path.join(ds._source.cache_path, name))
    assert ds[4]["i"] == 4  # other chunks are fine
