"""Pins index.json (DESIGN.md section 4): keys, sorted-key JSON, our extra keys, validation, sizes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lit_streaming.dataset import StreamingDataset
from lit_streaming.format import pytree
from lit_streaming.format.index import (
    FORMAT_VERSION,
    ChunkEntry,
    DatasetIndex,
    InvalidIndexError,
    check_relative_filename,
    finished_jobs,
    merge_indexes,
    read_index,
    record_job,
    write_text_atomic,
)
from lit_streaming.format.units import parse_size
from lit_streaming_writer import optimize

CONFIG_KEYS = {
    "chunk_bytes",
    "chunk_size",
    "compression",
    "data_format",
    "data_spec",
    "encryption",
    "format_version",
    "item_loader",
    "jobs",  # ids of the optimize calls that wrote it (reruns of a finished call do nothing)
}
CHUNK_KEYS = {"chunk_bytes", "chunk_size", "dim", "filename", "checksum", "file_bytes"}


def _config(**overrides):
    config = {
        "chunk_bytes": None,
        "chunk_size": 2,
        "compression": None,
        "data_format": ["int"],
        "data_spec": pytree.dumps(pytree.flatten(0)[1]),
        "encryption": None,
        "format_version": FORMAT_VERSION,
        "item_loader": "PyTreeLoader",
    }
    config.update(overrides)
    return config


def _index_text(chunks=None, **config) -> str:
    chunks = (
        [{"chunk_bytes": 24, "chunk_size": 1, "dim": None, "filename": "chunk-0-0.bin"}]
        if chunks is None
        else chunks
    )
    return json.dumps({"chunks": chunks, "config": _config(**config), "updated_at": "1"})


# ---- what optimize writes ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def written(tmp_path_factory) -> str:
    return optimize(
        lambda i: {"image": f"img{i}", "label": i, "extra": [i, (float(i), b"x")]},
        list(range(5)),
        str(tmp_path_factory.mktemp("idx") / "ds"),
        chunk_size=2,
        num_workers=1,
    )


def test_index_keys(written):
    text = Path(written, "index.json").read_text()
    data = json.loads(text)
    assert set(data) == {"chunks", "config", "updated_at"}
    assert "format" not in data  # LitData gives a top-level "format": "mds" a meaning
    assert set(data["config"]) == CONFIG_KEYS
    assert data["config"]["format_version"] == FORMAT_VERSION == 1
    assert data["config"]["item_loader"] == "PyTreeLoader"
    assert data["config"]["encryption"] is None
    assert data["config"]["data_format"] == ["str", "int", "int", "float", "bytes"]
    assert (data["config"]["chunk_size"], data["config"]["chunk_bytes"]) == (2, None)
    for chunk in data["chunks"]:
        assert set(chunk) == CHUNK_KEYS
        assert chunk["dim"] is None
        assert (
            chunk["file_bytes"]
            == chunk["chunk_bytes"]
            == os.path.getsize(os.path.join(written, chunk["filename"]))
        )
    assert [c["chunk_size"] for c in data["chunks"]] == [2, 2, 1]
    assert isinstance(data["updated_at"], str) and float(data["updated_at"]) > 1.6e9


def test_index_is_sorted_key_json(written):
    text = Path(written, "index.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True)


def test_data_spec_is_a_protocol_1_treespec_string(written):
    spec_text = json.loads(Path(written, "index.json").read_text())["config"]["data_spec"]
    assert isinstance(spec_text, str)
    spec = json.loads(spec_text)
    assert spec[0] == 1  # protocol
    assert spec[1]["type"] == "builtins.dict"
    assert json.loads(spec[1]["context"]) == ["image", "label", "extra"]
    sample = {"image": "a", "label": 1, "extra": [2, (3.0, b"x")]}
    assert pytree.loads(spec_text) == pytree.flatten(sample)[1]


def test_exact_json_text():
    index = DatasetIndex(
        chunks=[
            ChunkEntry(
                filename="chunk-0-0.bin",
                chunk_size=3,
                chunk_bytes=40,
                checksum="crc32:00000001",
                file_bytes=40,
            )
        ],
        config={"z": 1, "a": None},
        updated_at="123.5",
    )
    assert index.to_json() == (
        '{"chunks": [{"checksum": "crc32:00000001", "chunk_bytes": 40, "chunk_size": 3, "dim": null, '
        '"file_bytes": 40, "filename": "chunk-0-0.bin"}], '
        '"config": {"a": null, "z": 1}, "updated_at": "123.5"}'
    )


def test_chunk_without_our_keys_omits_them():
    """A LitData-style entry (no checksum / file_bytes) is written back without inventing them."""
    entry = ChunkEntry(filename="c.bin", chunk_size=1, chunk_bytes=10, dim=7)
    assert entry.to_dict() == {"chunk_bytes": 10, "chunk_size": 1, "dim": 7, "filename": "c.bin"}


def test_unknown_keys_survive_a_round_trip():
    text = _index_text(
        chunks=[
            {"chunk_bytes": 24, "chunk_size": 1, "dim": None, "filename": "c.bin", "temporal_offsets": [1]}
        ],
        types={"x": "int"},
        compression_level=None,
    )
    index = DatasetIndex.from_json(text, "src")
    again = json.loads(index.to_json())
    assert again["chunks"][0]["temporal_offsets"] == [1]
    assert again["config"]["types"] == {"x": "int"}
    assert DatasetIndex.from_json(index.to_json(), "src").to_json() == index.to_json()


def test_updated_at_is_kept_as_a_string():
    index = DatasetIndex.from_json(json.dumps({"chunks": [], "config": {}, "updated_at": 17}), "src")
    assert index.updated_at == "17"


# ---- validation --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "src is not valid JSON"),
        (b"\xff\xfe", "src is not valid JSON"),
        ("[]", "src has no 'chunks' list"),
        ('{"chunks": {}}', "src has no 'chunks' list"),
        ('{"chunks": []}', "src has no 'config' object"),
        ('{"chunks": [], "config": []}', "src has no 'config' object"),
        (_index_text(encryption="fernet"), "encrypted datasets are not supported"),
        (_index_text(data_format="int"), "data_format must be a list"),
        (_index_text(data_format=[1]), "data_format must be a list"),
        (
            _index_text(format_version=FORMAT_VERSION + 1),
            "format_version 2; this lit-streaming reads up to 1",
        ),
        (_index_text(compression_level="frame"), "unknown config.compression_level 'frame'"),
        (_index_text(chunks=[[]]), r"chunks\[0\] is not an object"),
        (
            _index_text(chunks=[{"filename": "c.bin", "chunk_size": -1, "chunk_bytes": 1}]),
            r"chunks\[0\].chunk_size",
        ),
        (_index_text(chunks=[{"filename": "c.bin", "chunk_size": True, "chunk_bytes": 1}]), "chunk_size"),
        (_index_text(chunks=[{"filename": "c.bin", "chunk_size": 1, "chunk_bytes": "9"}]), "chunk_bytes"),
        (_index_text(chunks=[{"filename": "c.bin", "chunk_size": 1, "chunk_bytes": 1, "dim": 1.5}]), "dim"),
        (_index_text(chunks=[{"chunk_size": 1, "chunk_bytes": 1}]), "chunk filename None"),
    ],
)
def test_invalid_index_is_refused_with_the_source_named(text, message):
    with pytest.raises(InvalidIndexError, match=message) as info:
        DatasetIndex.from_json(text, "src")
    assert "src" in str(info.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"format_version": "2"}, "format_version 2; this lit-streaming reads up to 1"),
        ({"format_version": 2.0}, "format_version 2; this lit-streaming reads up to 1"),
        ({"format_version": "two"}, "config.format_version 'two' is not a version number"),
        ({"format_version": [1]}, r"config.format_version \[1\] is not a version number"),
        ({"compression": "lz4"}, "config.compression 'lz4' is not supported"),
        ({"compression": "zstd:fast"}, "config.compression 'zstd:fast' is not supported"),
    ],
)
def test_unreadable_versions_and_codecs_are_refused_naming_the_file(config, message):
    with pytest.raises(InvalidIndexError, match=rf"src.*{message}|{message}") as info:
        DatasetIndex.from_json(_index_text(**config), "src")
    assert "src" in str(info.value)


@pytest.mark.parametrize("version", [1, "1", None])
def test_readable_format_versions_are_accepted(version):
    assert DatasetIndex.from_json(_index_text(format_version=version), "src").chunks


def test_a_deeply_nested_index_is_refused_naming_the_file():
    deep = '{"chunks": [], "config": {"x": ' + "[" * 200_000 + "]" * 200_000 + "}}"
    with pytest.raises(InvalidIndexError, match="src is nested too deeply"):
        DatasetIndex.from_json(deep, "src")


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (
            {"chunk_size": 10**12, "chunk_bytes": 4000},
            "chunk_size 1000000000000 cannot fit in chunk_bytes 4000",
        ),
        ({"chunk_size": 2, "chunk_bytes": 15}, "chunk_size 2 cannot fit in chunk_bytes 15"),
        (
            {"chunk_size": 2, "chunk_bytes": 100, "dim": 101},
            r"dim 101 \(tokens\) cannot fit in chunk_bytes 100",
        ),
    ],
)
def test_sizes_an_entry_claims_are_bounded_by_its_bytes(chunk, message):
    entry = dict({"filename": "c.bin", "dim": None}, **chunk)
    with pytest.raises(InvalidIndexError, match=rf"src: chunks\[0\] \(c.bin\): {message}"):
        DatasetIndex.from_json(_index_text(chunks=[entry]), "src")


def test_a_whole_file_zstd_entry_may_not_claim_a_zip_bomb():
    bomb = {"filename": "c.zstd.bin", "chunk_size": 2, "chunk_bytes": 3 * 2**30, "file_bytes": 98_000}
    with pytest.raises(
        InvalidIndexError, match=r"chunk_bytes 3221225472 is more than 1024x its file_bytes 98000"
    ):
        DatasetIndex.from_json(_index_text(chunks=[bomb], compression="zstd"), "src")
    fine = dict(bomb, chunk_bytes=200 << 20)  # under 256 MiB: never refused for its ratio
    assert DatasetIndex.from_json(_index_text(chunks=[fine], compression="zstd"), "src").chunks


def test_sizes_of_other_loaders_are_left_to_them():
    rows = {"filename": "p.parquet", "chunk_size": 10**6, "chunk_bytes": 3000}  # RLE: many rows, few bytes
    assert DatasetIndex.from_json(_index_text(chunks=[rows], item_loader="ParquetLoader"), "src").chunks


@pytest.mark.parametrize("level", [None, "", "chunk", "batch", "sample", "Batch"])
def test_compression_levels_litdata_writes_are_accepted(level):
    index = DatasetIndex.from_json(_index_text(compression_level=level), "src")
    assert index.compression_level == (level or "chunk").lower()


@pytest.mark.parametrize(
    "name",
    [
        "../secret.bin",
        "..",
        "a/../../secret.bin",
        "/etc/passwd",
        "\\\\server\\share\\x.bin",
        "..\\x.bin",
        "C:\\x.bin",
        "c:x.bin",
        "s3://bucket/x.bin",
        "file:///etc/passwd",
        "chunk\x00.bin",
        "",
        "%2e%2e/secret.bin",  # an HTTP server decodes it to ../secret.bin
        "%2E%2E/secret.bin",
        "a/%2e%2e/%2e%2e/secret.bin",
        "..%2fsecret.bin",
        "%252e%252e/secret.bin",  # encoded twice
        "%2fetc%2fpasswd",
    ],
)
def test_filenames_escaping_the_dataset_are_refused(name):
    with pytest.raises(InvalidIndexError, match="escapes the dataset folder|non-empty string"):
        check_relative_filename(name, "src")
    text = _index_text(chunks=[{"chunk_bytes": 1, "chunk_size": 1, "dim": None, "filename": name}])
    with pytest.raises(InvalidIndexError, match=r"src: chunks\[0\]"):
        DatasetIndex.from_json(text, "src")


@pytest.mark.parametrize(
    "name", ["chunk-0-0.bin", "sub/chunk-0-0.bin", "a/../chunk.bin", "chunk-0-0.zstd:3.bin", "..x.bin"]
)
def test_relative_filenames_are_accepted(name):
    assert check_relative_filename(name, "src") == name


def test_hostile_index_cannot_make_the_reader_open_outside_files(tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"\0" * 32)
    ds_dir = tmp_path / "ds"
    ds_dir.mkdir()
    chunk = {"chunk_bytes": 32, "chunk_size": 1, "dim": None, "filename": "../secret.bin"}
    (ds_dir / "index.json").write_text(_index_text(chunks=[chunk]))
    with pytest.raises(InvalidIndexError, match="'../secret.bin' escapes the dataset folder"):
        StreamingDataset(str(ds_dir))


def test_read_index_names_a_missing_file(tmp_path):
    path = str(tmp_path / "index.json")
    with pytest.raises(InvalidIndexError, match=f"No index.json at {path}"):
        read_index(path)


def test_read_index_names_an_unreadable_file(tmp_path):
    (tmp_path / "index.json").mkdir()
    with pytest.raises(InvalidIndexError, match=f"Cannot read {tmp_path / 'index.json'}"):
        read_index(str(tmp_path / "index.json"))


def test_read_index_names_invalid_json(tmp_path):
    (tmp_path / "index.json").write_text('{"chunks": [')
    with pytest.raises(InvalidIndexError, match=f"{tmp_path / 'index.json'} is not valid JSON"):
        read_index(str(tmp_path / "index.json"))


# ---- merging partial indexes -------------------------------------------------------------------------------
def _part(names, **config):
    return DatasetIndex(
        chunks=[ChunkEntry(filename=n, chunk_size=1, chunk_bytes=9) for n in names], config=_config(**config)
    )


def test_merge_keeps_the_given_order_and_skips_empty_parts():
    merged = merge_indexes(
        [_part(["chunk-0-0.bin", "chunk-0-1.bin"]), _part([]), _part(["chunk-1-0.bin"])], "out"
    )
    assert [c.filename for c in merged.chunks] == ["chunk-0-0.bin", "chunk-0-1.bin", "chunk-1-0.bin"]


def test_merge_refuses_disagreeing_parts():
    with pytest.raises(
        InvalidIndexError, match=r"out: partial index #1 disagrees with #0 on \[.data_format.\]"
    ):
        merge_indexes([_part(["a.bin"]), _part(["b.bin"], data_format=["str"])], "out")


def test_merge_of_nothing_is_an_error():
    with pytest.raises(InvalidIndexError, match="out: no chunks were written"):
        merge_indexes([_part([]), _part([])], "out")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = str(tmp_path / "index.json")
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert Path(path).read_text() == "two"
    assert os.listdir(tmp_path) == ["index.json"]


# ---- sizes -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "size"),
    [
        (None, None),
        (1, 1),
        (123_456, 123_456),
        ("64MB", 64_000_000),
        ("64mb", 64_000_000),
        ("64 MB", 64_000_000),
        ("1kB", 1000),
        ("1KB", 1000),
        ("2GB", 2_000_000_000),
        ("1TB", 10**12),
        ("1.5MB", 1_500_000),
        ("100", 100),
        ("100B", 100),
        ("1KiB", 1024),
        ("64MiB", 64 * 2**20),
        ("1GiB", 2**30),
    ],
)
def test_parse_size(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "MB", "abc", "10XB", "-5MB", "0.1B", "1e3", "0", 0, -1])
def test_parse_size_rejects_non_sizes(value):
    with pytest.raises(ValueError, match="chunk_bytes"):
        parse_size(value, "chunk_bytes")


@pytest.mark.parametrize("value", [True, 1.5, [1]])
def test_parse_size_rejects_wrong_types(value):
    with pytest.raises(TypeError, match="chunk_bytes"):
        parse_size(value, "chunk_bytes")


def test_finished_jobs_are_recorded_capped_and_ignored_when_merging():
    config = _config()
    assert finished_jobs(config) == []
    for k in range(70):
        config = record_job(config, f"job{k}")
    assert finished_jobs(config) == [f"job{k}" for k in range(6, 70)]  # the last 64
    assert finished_jobs(record_job(config, "job10"))[-1] == "job10"
    assert finished_jobs({"jobs": "not a list"}) == [] and finished_jobs({"jobs": [1, "a"]}) == ["a"]
    appended = DatasetIndex([ChunkEntry("chunk-0-0.bin", 1, 24)], config)
    part = DatasetIndex([ChunkEntry("chunk-0-1.bin", 1, 24)], _config())
    assert finished_jobs(merge_indexes([appended, part], "src").config) == finished_jobs(config)
