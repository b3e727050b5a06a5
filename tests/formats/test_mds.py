"""MosaicML MDS read in place: datasets written by mosaicml-streaming's own MDSWriter."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.formats import MDS_COLUMNS, SCALARS, mds_sample, write_mds
from support.product import ProductTests, upload

from lit_streaming import StreamingDataset
from lit_streaming.format.serializers import PickleNotAllowedError
from lit_streaming.formats import FormatError, MissingExtraError
from lit_streaming.storage.errors import ChunkIntegrityError

N = 45


@pytest.fixture(scope="module")
def mds_dir(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("mds") / "ds")
    index = write_mds(out, N, compression="zstd", hashes=["sha1", "xxh64"], size_limit=1 << 14)
    assert len(index["shards"]) >= 3
    return out


class TestProduct(ProductTests):
    n, key = N, "id"

    @pytest.fixture()
    def path(self, mds_dir):
        return mds_dir


def _id_only(sample: dict) -> dict:
    return {"id": sample["id"]}


def assert_sample_equal(got: dict, want: dict) -> None:
    assert set(got) == set(MDS_COLUMNS)
    for key in ("id", "text", "blob", "meta", "big", "ratio", "price"):
        assert got[key] == want[key], key
    for key in ("arr", "arr_f32", "arr_fixed"):
        assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key
    for name in SCALARS:
        value = got[f"s_{name}"]
        assert value.dtype == np.dtype(name) and value == want[f"s_{name}"], name
    assert np.array_equal(np.array(got["icon"]), np.array(want["icon"]))
    assert got["raw"].mode == "L" and np.array_equal(np.array(got["raw"]), np.array(want["raw"]))
    from streaming.base.format.mds.encodings import mds_encode

    written = Image.open(io.BytesIO(mds_encode("jpeg", want["photo"])))  # what MDSWriter stored
    assert np.array_equal(np.array(got["photo"]), np.array(written))
    assert len(got["frames"]) == len(want["frames"])
    assert all(np.array_equal(np.array(a), np.array(b)) for a, b in zip(got["frames"], want["frames"]))


def test_every_column_type_reads_back_equal(mds_dir):
    ds = StreamingDataset(mds_dir)
    assert ds.format_name == "mds" and len(ds) == N
    for i in range(N):
        assert_sample_equal(ds[i], mds_sample(i))


def test_agrees_with_mosaicml_reader_on_uncompressed_shards(tmp_path):
    from streaming.base.format import reader_from_json

    out = str(tmp_path / "raw")
    index = write_mds(out, 12, compression=None, hashes=["md5"], size_limit=1 << 13)
    ours = StreamingDataset(out)
    k = 0
    for shard in index["shards"]:
        reader = reader_from_json(out, None, shard)
        for j in range(shard["samples"]):
            theirs = reader.decode_sample(reader.get_sample_data(j))
            mine = ours[k]
            assert mine["text"] == theirs["text"] and np.array_equal(mine["arr"], theirs["arr"])
            assert np.array_equal(np.array(mine["photo"]), np.array(theirs["photo"]))
            assert (
                type(mine["s_uint16"]) is type(theirs["s_uint16"]) and mine["s_uint16"] == theirs["s_uint16"]
            )
            k += 1
    assert k == len(ours) == 12


@pytest.mark.parametrize("compression", ["gz", "bz2:5", "br", "snappy", "zstd:7"])
def test_every_codec(tmp_path, compression):
    out = str(tmp_path / "c")
    columns = {"id": "int", "text": "str"}
    write_mds(
        out,
        20,
        compression=compression,
        hashes=["md5"],
        size_limit=200,
        columns=columns,
        make=lambda i: {"id": i, "text": "x" * i},
    )
    ds = StreamingDataset(out)
    assert [ds[i] for i in range(20)] == [{"id": i, "text": "x" * i} for i in range(20)]
    assert len(ds.chunk_lengths) > 1


def test_missing_codec_package_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    out = str(tmp_path / "br")
    write_mds(out, 3, compression="br", columns={"id": "int"}, make=lambda i: {"id": i})
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "brotli" else real(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r"brotli.*lit-streaming\[mds\]"):
        StreamingDataset(out)


def test_format_is_detected_and_can_be_forced(mds_dir, litdata_dir):
    assert StreamingDataset(mds_dir, format="mds")[0]["id"] == 0
    with pytest.raises(FormatError, match="no 'shards' list"):
        StreamingDataset(litdata_dir, format="mds")
    with pytest.raises(ValueError, match="Unknown dataset format 'tfrecord'"):
        StreamingDataset(mds_dir, format="tfrecord")


def test_pickle_needs_allow_pickle(tmp_path):
    out = str(tmp_path / "pkl")
    write_mds(out, 4, columns={"id": "int", "obj": "pkl"}, make=lambda i: {"id": i, "obj": {"set": {i}}})
    with pytest.raises(PickleNotAllowedError, match="column 'obj'.*allow_pickle=True"):
        StreamingDataset(out)
    assert StreamingDataset(out, allow_pickle=True)[3] == {"id": 3, "obj": {"set": {3}}}


def _copy(src: str, dst: Path) -> Path:
    dst.mkdir()
    for name in os.listdir(src):
        (dst / name).write_bytes(Path(src, name).read_bytes())
    return dst


def test_a_flipped_byte_fails_the_listed_hash(mds_dir, tmp_path):
    bad = _copy(mds_dir, tmp_path / "bad")
    name = json.loads((bad / "index.json").read_text())["shards"][1]["zip_data"]["basename"]
    data = bytearray((bad / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / name).write_bytes(bytes(data))
    ds = StreamingDataset(str(bad))
    assert ds[0]["id"] == 0
    with pytest.raises(ChunkIntegrityError, match=rf"{name}.*checksum is xxh64:"):
        ds[int(ds.chunk_lengths[0])]


def test_hostile_offsets_are_refused_before_slicing(tmp_path):
    out = _copy_raw(tmp_path)
    index = json.loads((out / "index.json").read_text())
    name = index["shards"][0]["raw_data"]["basename"]
    data = bytearray((out / name).read_bytes())
    data[8:12] = (2**31).to_bytes(4, "little")  # offsets[1] far past the file
    (out / name).write_bytes(bytes(data))
    with pytest.raises(Exception, match=rf"{name}.*invalid sample offsets"):
        StreamingDataset(str(out))[0]


def _copy_raw(tmp_path: Path) -> Path:
    out = tmp_path / "raw"
    write_mds(
        str(out), 5, compression=None, columns={"id": "int", "t": "str"}, make=lambda i: {"id": i, "t": "ab"}
    )
    return out


def test_index_escaping_the_folder_is_refused(tmp_path):
    out = _copy_raw(tmp_path)
    index = json.loads((out / "index.json").read_text())
    index["shards"][0]["raw_data"]["basename"] = "../../etc/passwd"
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match="escapes the dataset folder"):
        StreamingDataset(str(out))


def test_unknown_encoding_names_column_and_shard(tmp_path):
    out = _copy_raw(tmp_path)
    index = json.loads((out / "index.json").read_text())
    index["shards"][0]["column_encodings"][1] = "tensorish"
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match=r"shards\[0\] column 't'.*unknown MDS column encoding 'tensorish'"):
        StreamingDataset(str(out))


def test_streams_from_a_remote_url_through_the_bounded_cache(mds_dir, tmp_path, memory_url):
    upload(mds_dir, memory_url)
    ds = StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"), max_cache_size="40KB")
    assert [s["id"] for s in ds] == list(range(N))
    assert_sample_equal(ds[N - 1], mds_sample(N - 1))


def test_a_litdata_item_loader_is_refused_for_another_format(mds_dir):
    from lit_streaming.item_loaders import TokensLoader

    with pytest.raises(
        ValueError, match=r"is a mds dataset: item_loader=TokensLoader reads LitData chunks only"
    ):
        StreamingDataset(mds_dir, item_loader=TokensLoader(4))


def test_inspect_shows_the_format(mds_dir, litdata_dir, capsys):
    from lit_streaming.cli import main

    assert main(["inspect", mds_dir]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "mds" and summary["items"] == N and summary["codecs"] == ["zstd"]
    assert summary["columns"]["photo"] == "jpeg" and summary["checksums"] is True
    assert main(["inspect", litdata_dir]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "litdata"


def test_spawned_workers_read_it(mds_dir):
    from support.product import batch_ids

    from lit_streaming import StreamingDataLoader

    ds = StreamingDataset(mds_dir, transform=_id_only, shuffle=True)
    loader = StreamingDataLoader(ds, batch_size=5, num_workers=1, multiprocessing_context="spawn")
    assert sorted(batch_ids(list(loader))) == list(range(N))


def test_verify_reads_every_sample_and_names_a_corrupt_shard(mds_dir, tmp_path, capsys):
    from lit_streaming.cli import main

    assert main(["verify", mds_dir]) == 0
    assert f"{N} samples" in capsys.readouterr().out
    bad = _copy(mds_dir, tmp_path / "bad")
    name = json.loads((bad / "index.json").read_text())["shards"][2]["zip_data"]["basename"]
    (bad / name).write_bytes((bad / name).read_bytes()[:-3])
    assert main(["verify", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"chunk {name}, item 0" in err and "1 of" in err


def test_decompression_is_bounded_by_the_recorded_size(mds_dir, tmp_path):
    bad = _copy(mds_dir, tmp_path / "bomb")
    index = json.loads((bad / "index.json").read_text())
    index["shards"][0]["raw_data"]["bytes"] = 100  # the shard inflates to far more than the index admits
    (bad / "index.json").write_text(json.dumps(index))
    with pytest.raises(
        Exception, match=r"shard.00000.mds.zstd .*zstd frame declares \d+ bytes, the index records 100"
    ):
        StreamingDataset(str(bad))[0]
