"""Corrupt and hostile datasets, local and remote (``memory://``): each fails fast with an error naming the
chunk or file, never a hang, a crash or a garbage sample."""

from __future__ import annotations

import json
import os
import struct
import time
from fractions import Fraction

import numpy as np
import pytest
from support.storage import (
    Sample,
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
from lit_streaming.item_loaders import TokensLoader
from lit_streaming.storage import ChunkIntegrityError, UnsafeFileError
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


def test_crc32_digests_of_older_datasets_are_still_checked(where, dataset):
    name = chunk_names(dataset)[2]
    set_checksum(dataset, name)  # as written before XXH3-64: "crc32:<hex>"
    flip_byte(dataset / name)
    with pytest.raises(ChunkIntegrityError, match=rf"{name}.*checksum is crc32:\w+, index.json says crc32:"):
        read_all_quickly(where(dataset))


def test_flipped_bytes_fail_the_checksum(where, dataset):
    name = chunk_names(dataset)[2]
    flip_byte(dataset / name)
    with pytest.raises(
        ChunkIntegrityError, match=rf"{name}.*checksum is xxh3_64:\w+, index.json says xxh3_64:"
    ):
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
    assert not os.path.exists(os.path.join(ds.cache_path, name))
    assert ds[4]["i"] == 4  # other chunks are fine


# ---- sizes an index declares are bounded before anything is allocated (issue 12 item 6) ------------------------
def opens_quickly(where, folder, **kwargs):
    start = time.monotonic()
    try:
        return where(folder, **kwargs)
    finally:
        assert time.monotonic() - start < 1


@pytest.mark.parametrize("claimed", [10**12, 4 * 10**8])
def test_a_forged_chunk_size_is_refused_before_the_plan_is_built(where, dataset, claimed):
    def edit(index: dict) -> None:
        index["chunks"][1]["chunk_size"] = claimed

    rewrite_index(dataset, edit)
    name = chunk_names(dataset)[1]
    with pytest.raises(InvalidIndexError, match=rf"chunks\[1\] \({name}\): chunk_size {claimed} cannot fit"):
        opens_quickly(where, dataset, shuffle=True)


def test_a_forged_token_count_is_refused(where, tmp_path):
    folder = tmp_path / "tokens"
    optimize(
        TokenRecord(), list(range(8)), str(folder), chunk_size=4, num_workers=1, item_loader=TokensLoader()
    )

    def edit(index: dict) -> None:
        index["chunks"][0]["dim"] = 10**12

    rewrite_index(folder, edit)
    with pytest.raises(
        InvalidIndexError, match=r"chunks\[0\] \(.*\): dim 1000000000000 \(tokens\) cannot fit"
    ):
        opens_quickly(where, folder, item_loader=TokensLoader(block_size=4))


class TokenRecord:
    def __call__(self, i: int) -> np.ndarray:
        return np.arange(i, i + 10, dtype=np.int32)


def test_a_forged_item_count_in_a_chunk_header_is_refused(where, dataset):
    name = chunk_names(dataset)[0]
    data = bytearray((dataset / name).read_bytes())
    struct.pack_into("<I", data, 0, 10**8)
    (dataset / name).write_bytes(bytes(data))
    set_checksum(dataset, name)
    with pytest.raises(CorruptChunkError, match=rf"{name}.*holds 100000000 items but index.json says 4"):
        read_all_quickly(where(dataset))


def test_a_compressed_chunk_claiming_gigabytes_is_refused_before_inflating(where, tmp_path):
    folder = tmp_path / "zstd"
    optimize(Sample(300, "z"), list(range(8)), str(folder), chunk_size=4, num_workers=1, compression="zstd")
    claim = 3 * 2**30

    def claim_3_gib(index: dict) -> None:
        index["chunks"][0]["chunk_bytes"] = claim

    rewrite_index(folder, claim_3_gib)
    with pytest.raises(InvalidIndexError, match=rf"chunk_bytes {claim} is more than 1024x its file_bytes"):
        opens_quickly(where, folder)

    def as_litdata_writes_it(index: dict) -> None:  # no file_bytes: only the read can tell
        for chunk in index["chunks"]:
            chunk.pop("file_bytes")
            chunk.pop("checksum")

    rewrite_index(folder, as_litdata_writes_it)
    name = chunk_names(folder)[0]
    with pytest.raises(CorruptChunkError, match=rf"{name}.*chunk_bytes {claim} is more than 1024x.*zip bomb"):
        read_all_quickly(where(folder))


# ---- reads outside the dataset (item 7) ----------------------------------------------------------------------
@pytest.fixture(params=["in place", "local:"])
def local_where(request, tmp_path):
    """A dataset folder read in place or copied through the cache by ``local:``."""

    def open_dataset(folder, **kwargs) -> StreamingDataset:
        if request.param == "in place":
            return StreamingDataset(str(folder), **kwargs)
        return StreamingDataset(f"local:{folder}", cache_dir=str(tmp_path / "cache"), **kwargs)

    return open_dataset


def test_a_symlink_out_of_the_dataset_folder_is_not_followed(local_where, dataset, tmp_path):
    name = chunk_names(dataset)[1]
    secret = tmp_path / "secret.bin"
    secret.write_bytes((dataset / name).read_bytes())  # even bytes that pass every check stay unread
    (dataset / name).unlink()
    (dataset / name).symlink_to(secret)
    with pytest.raises(UnsafeFileError, match=rf"{name} resolves to {secret}, outside the dataset folder"):
        read_all_quickly(local_where(dataset))
    cache = tmp_path / "cache"
    copied = [p for p in cache.rglob(name)] if cache.exists() else []
    assert copied == []


def test_a_fifo_as_a_chunk_is_refused_not_opened(local_where, dataset):
    name = chunk_names(dataset)[2]
    (dataset / name).unlink()
    os.mkfifo(dataset / name)
    with pytest.raises(UnsafeFileError, match=rf"{name} is a FIFO; refusing to read it"):
        read_all_quickly(local_where(dataset))


def test_a_fifo_as_index_json_is_refused_not_opened(dataset):
    (dataset / "index.json").unlink()
    os.mkfifo(dataset / "index.json")
    start = time.monotonic()
    with pytest.raises((InvalidIndexError, UnsafeFileError), match=r"index.json.*(not a regular file|FIFO)"):
        StreamingDataset(str(dataset))
    assert time.monotonic() - start < 1
