"""optimize and the chunk writer: chunk cutting, fn kinds, determinism, modes and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lit_streaming.dataset import StreamingDataset
from lit_streaming.format.chunk import ChunkView
from lit_streaming.item_loaders import TokensLoader
from lit_streaming_writer import (
    ChunkWriter,
    DatasetExistsError,
    InputError,
    SampleStructureError,
    WorkerError,
    optimize,
)


def index_of(path: str) -> dict:
    with open(os.path.join(path, "index.json")) as f:
        return json.load(f)


def chunk_sizes(path: str) -> list[int]:
    return [c["chunk_size"] for c in index_of(path)["chunks"]]


def values(path: str, key: str = "v") -> list:
    return [sample[key] for sample in StreamingDataset(path)]


def payload(i: int) -> dict:
    return {"v": i}


def blob(n: int) -> dict:
    return {"b": b"\xab" * n}


def identity(x):
    return x


# ---- chunk cutting -----------------------------------------------------------------------------------------
def test_chunk_size_cuts_chunks(tmp_path):
    out = optimize(payload, list(range(10)), str(tmp_path / "d"), chunk_size=4, num_workers=1)
    assert chunk_sizes(out) == [4, 4, 2]
    assert [c["filename"] for c in index_of(out)["chunks"]] == [
        "chunk-0-0.bin",
        "chunk-0-1.bin",
        "chunk-0-2.bin",
    ]
    assert values(out) == list(range(10))


def test_chunk_bytes_cuts_before_the_item_that_would_overflow(tmp_path):
    # Each item: 4-byte leaf size + 100 bytes, plus its 4-byte offset in the chunk; the header is 8 bytes.
    limit = 8 + 3 * (4 + 104)
    out = optimize(blob, [100] * 7, str(tmp_path / "d"), chunk_bytes=limit, num_workers=1)
    chunks = index_of(out)["chunks"]
    assert [c["chunk_size"] for c in chunks] == [3, 3, 1]
    assert [c["chunk_bytes"] for c in chunks] == [limit, limit, 8 + 108]
    assert all(os.path.getsize(os.path.join(out, c["filename"])) <= limit for c in chunks)
    out2 = optimize(blob, [100] * 7, str(tmp_path / "d2"), chunk_bytes=limit - 1, num_workers=1)
    assert chunk_sizes(out2) == [2, 2, 2, 1]


def test_chunk_bytes_accepts_size_strings(tmp_path):
    out = optimize(blob, [400] * 5, str(tmp_path / "d"), chunk_bytes="1kB", num_workers=1)
    assert index_of(out)["config"]["chunk_bytes"] == 1000
    assert chunk_sizes(out) == [2, 2, 1]


def test_oversized_item_gets_a_chunk_of_its_own(tmp_path):
    out = optimize(blob, [10, 10, 5000, 10, 10], str(tmp_path / "d"), chunk_bytes=200, num_workers=1)
    chunks = index_of(out)["chunks"]
    assert [c["chunk_size"] for c in chunks] == [2, 1, 2]
    assert chunks[1]["chunk_bytes"] == 8 + 4 + 4 + 5000
    assert [len(s["b"]) for s in StreamingDataset(out)] == [10, 10, 5000, 10, 10]


def test_oversized_first_item(tmp_path):
    out = optimize(blob, [5000, 10], str(tmp_path / "d"), chunk_bytes=100, num_workers=1)
    assert chunk_sizes(out) == [1, 1]


def test_token_chunk_size_counts_tokens(tmp_path):
    records = [np.full(n, k, dtype=np.int32) for k, n in enumerate([4, 4, 3, 9, 1])]
    out = optimize(
        records.__getitem__,
        list(range(5)),
        str(tmp_path / "t"),
        chunk_size=8,
        num_workers=1,
        item_loader=TokensLoader(),
    )
    chunks = index_of(out)["chunks"]
    assert [(c["chunk_size"], c["dim"]) for c in chunks] == [(2, 8), (1, 3), (1, 9), (1, 1)]
    assert index_of(out)["config"]["item_loader"] == "TokensLoader"


def test_chunk_writer_directly(tmp_path):
    writer = ChunkWriter(str(tmp_path), rank=3, chunk_size=2)
    for i in range(3):
        writer.add({"v": i}, f"input #{i}")
    writer.flush()
    assert [c.filename for c in writer.chunks] == ["chunk-3-0.bin", "chunk-3-1.bin"]
    assert sorted(os.listdir(tmp_path)) == ["chunk-3-0.bin", "chunk-3-1.bin"]
    view = ChunkView(Path(tmp_path / "chunk-3-0.bin").read_bytes(), "c", expected_items=2)
    assert view.num_items == 2


# ---- what fn may return ------------------------------------------------------------------------------------
def gen(n: int):
    for k in range(n):
        yield {"v": n * 10 + k}


def test_generator_fn_yields_many_samples(tmp_path):
    out = optimize(gen, [1, 0, 3], str(tmp_path / "d"), chunk_size=2, num_workers=1)
    assert values(out) == [10, 30, 31, 32]


def skip_odd(i: int):
    return None if i % 2 else {"v": i}


def test_none_skips_the_input(tmp_path):
    out = optimize(skip_odd, list(range(7)), str(tmp_path / "d"), chunk_size=2, num_workers=2)
    assert values(out) == [0, 2, 4, 6]


def test_all_none_writes_an_empty_dataset(tmp_path):
    """As LitData: every input skipped is an empty dataset (an index without chunks), not an error."""
    out = optimize(lambda i: None, [1, 2], str(tmp_path / "d"), chunk_size=2, num_workers=2)
    index = json.loads((tmp_path / "d" / "index.json").read_text())
    assert index["chunks"] == [] and index["config"]["data_format"] is None
    assert sorted(os.listdir(out)) == ["index.json"]
    # and it can be appended to: the first real sample decides the structure
    optimize(payload, [3], out, chunk_size=2, num_workers=1, mode="append")
    assert len(json.loads((tmp_path / "d" / "index.json").read_text())["chunks"]) == 1


def test_empty_inputs_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="inputs"):
        optimize(payload, [], str(tmp_path / "d"), chunk_size=2)


# ---- determinism -------------------------------------------------------------------------------------------
def test_same_inputs_and_workers_give_identical_chunks(tmp_path):
    inputs = list(range(23))
    a = optimize(payload, inputs, str(tmp_path / "a"), chunk_size=4, num_workers=2)
    b = optimize(payload, inputs, str(tmp_path / "b"), chunk_size=4, num_workers=2)
    ia, ib = index_of(a), index_of(b)
    ia.pop("updated_at"), ib.pop("updated_at")
    assert ia == ib
    files = sorted(n for n in os.listdir(a) if n.endswith(".bin"))
    assert files == sorted(n for n in os.listdir(b) if n.endswith(".bin"))
    assert {n.split("-")[1] for n in files} == {"0", "1"}  # both workers wrote chunks
    for name in files:
        assert Path(a, name).read_bytes() == Path(b, name).read_bytes()
    assert values(a) == inputs  # contiguous shards, merged in rank order


# ---- argument errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"chunk_size": 2, "chunk_bytes": "1MB"}])
def test_exactly_one_of_chunk_size_and_chunk_bytes(tmp_path, kwargs):
    with pytest.raises(ValueError, match="exactly one of `chunk_size`.*`chunk_bytes`"):
        optimize(payload, [1], str(tmp_path / "d"), **kwargs)
    assert not os.path.exists(tmp_path / "d" / "index.json")


@pytest.mark.parametrize(
    "kwargs", [{"chunk_size": 0}, {"chunk_size": True}, {"chunk_size": "4"}, {"chunk_bytes": "lots"}]
)
def test_bad_chunk_limits(tmp_path, kwargs):
    with pytest.raises(ValueError, match="chunk_size|chunk_bytes"):
        optimize(payload, [1], str(tmp_path / "d"), **kwargs)


def test_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="`mode`"):
        optimize(payload, [1], str(tmp_path / "d"), chunk_size=1, mode="replace")


# ---- structure mismatches ----------------------------------------------------------------------------------
def changes_type(i: int):
    return {"v": i, "label": "four" if i == 4 else i}


def changes_keys(i: int):
    return {"v": i, "other": 1} if i == 2 else {"v": i, "label": 1}


@pytest.mark.parametrize("workers", [1, 2])
def test_leaf_type_mismatch_names_input_and_field(tmp_path, workers):
    # Six inputs: with two workers the odd input #4 sits in the middle of the second worker's share.
    with pytest.raises((InputError, WorkerError, SampleStructureError)) as info:
        optimize(changes_type, list(range(6)), str(tmp_path / "d"), chunk_size=2, num_workers=workers)
    message = str(info.value)
    assert "input #4" in message
    assert "['label']" in message
    assert "'str'" in message and "'int'" in message
    assert not os.path.exists(tmp_path / "d" / "index.json")


def odd_first_of_second_shard(i: int):
    return {"v": i, "label": "three" if i == 3 else i}


@pytest.mark.xfail(
    strict=True,
    reason="each worker compares samples with its own first sample: an odd first sample of worker 1's share "
    "(input #3 of [0,1,2] [3,4]) is blamed on input #4 (optimize.py should compare with the dataset's first)",
)
def test_mismatch_at_the_start_of_a_share_names_that_input(tmp_path):
    with pytest.raises((InputError, WorkerError, SampleStructureError)) as info:
        optimize(odd_first_of_second_shard, list(range(5)), str(tmp_path / "d"), chunk_size=2, num_workers=2)
    assert "input #3" in str(info.value)


def test_structure_mismatch_names_input(tmp_path):
    with pytest.raises((InputError, WorkerError, SampleStructureError), match="input #2.*structure"):
        optimize(changes_keys, list(range(4)), str(tmp_path / "d"), chunk_size=2, num_workers=1)


def test_jpeg_and_pil_images_may_share_a_field(tmp_path):
    from PIL import Image

    path = str(tmp_path / "a.jpg")
    Image.new("RGB", (4, 4), "red").save(path)

    def image(i):
        return {"img": Image.open(path) if i == 0 else Image.new("RGB", (4, 4), "blue")}

    out = optimize(image, [0, 1], str(tmp_path / "d"), chunk_size=2, num_workers=1)
    assert index_of(out)["config"]["data_format"] == ["jpeg"]


# ---- modes -------------------------------------------------------------------------------------------------
def test_mode_none_refuses_an_existing_dataset(tmp_path):
    out = optimize(payload, [1, 2], str(tmp_path / "d"), chunk_size=1, num_workers=1)
    before = Path(out, "index.json").read_text()
    with pytest.raises(DatasetExistsError, match=f"{out} already holds a dataset.*overwrite.*append"):
        optimize(payload, [7], out, chunk_size=1, num_workers=1)
    assert Path(out, "index.json").read_text() == before
    assert values(out) == [1, 2]


def test_mode_overwrite_replaces_everything(tmp_path):
    out = optimize(payload, list(range(6)), str(tmp_path / "d"), chunk_size=1, num_workers=2)
    optimize(payload, [7, 8], out, chunk_size=2, num_workers=1, mode="overwrite")
    assert values(out) == [7, 8]
    assert sorted(os.listdir(out)) == ["chunk-0-0.bin", "index.json"]  # no stale chunks of the old dataset


def test_mode_append_adds_chunks_after_the_existing_ones(tmp_path):
    out = optimize(payload, [0, 1, 2], str(tmp_path / "d"), chunk_size=2, num_workers=1)
    old = index_of(out)["chunks"]
    optimize(payload, [3, 4, 5, 6], out, chunk_size=2, num_workers=2, mode="append")
    new = index_of(out)["chunks"]
    assert new[: len(old)] == old
    names = [c["filename"] for c in new]
    assert len(set(names)) == len(names)
    assert names[:2] == ["chunk-0-0.bin", "chunk-0-1.bin"]
    assert values(out) == list(range(7))


def test_mode_append_with_numbered_zstd_level(tmp_path):
    out = optimize(payload, [0, 1], str(tmp_path / "d"), chunk_size=1, num_workers=1, compression="zstd:3")
    optimize(payload, [2, 3], out, chunk_size=1, num_workers=1, compression="zstd:3", mode="append")
    names = [c["filename"] for c in index_of(out)["chunks"]]
    assert names == [f"chunk-0-{k}.zstd:3.bin" for k in range(4)]
    assert values(out) == [0, 1, 2, 3]


def test_mode_append_to_nothing_creates_the_dataset(tmp_path):
    out = optimize(payload, [5], str(tmp_path / "d"), chunk_size=1, num_workers=1, mode="append")
    assert values(out) == [5]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chunk_size": 3},
        {"chunk_bytes": "1MB"},
        {"chunk_size": 2, "compression": "zstd"},
        {"chunk_size": 2, "item_loader": TokensLoader()},
    ],
)
def test_mode_append_refuses_different_settings(tmp_path, kwargs):
    out = optimize(payload, [0, 1], str(tmp_path / "d"), chunk_size=2, num_workers=1)
    before = Path(out, "index.json").read_text()
    with pytest.raises(ValueError, match=f"Cannot append to {out}"):
        optimize(payload, [2], out, num_workers=1, mode="append", **kwargs)
    assert Path(out, "index.json").read_text() == before
    assert values(out) == [0, 1]


def other_type(i: int):
    return {"v": str(i)}


def test_mode_append_refuses_a_different_sample_structure(tmp_path):
    out = optimize(payload, [0, 1], str(tmp_path / "d"), chunk_size=2, num_workers=1)
    with pytest.raises((InputError, WorkerError, SampleStructureError), match="input #0.*\\['v'\\]"):
        optimize(other_type, [2], out, chunk_size=2, num_workers=1, mode="append")
    assert values(out) == [0, 1]


# ---- failures ----------------------------------------------------------------------------------------------
def fails_on_five(i: int):
    if i == 5:
        raise KeyError(f"no label for {i}")
    return {"v": i}


@pytest.mark.parametrize("workers", [1, 2])
def test_fn_raising_names_the_input_and_leaves_no_index(tmp_path, workers):
    out = str(tmp_path / "d")
    with pytest.raises((InputError, WorkerError)) as info:
        optimize(fails_on_five, list(range(8)), out, chunk_size=2, num_workers=workers)
    message = str(info.value)
    assert "input #5" in message
    assert "KeyError" in message and "no label for 5" in message
    if isinstance(info.value, WorkerError):
        assert "fails_on_five" in message  # the worker's original traceback travels with the error
    else:
        assert isinstance(info.value.__cause__, KeyError)
    assert not os.path.exists(os.path.join(out, "index.json"))
    # A rerun after fixing the bug succeeds and gives the full dataset.
    optimize(payload, list(range(8)), out, chunk_size=2, num_workers=workers)
    assert values(out) == list(range(8))
