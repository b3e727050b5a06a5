"""StreamingDataset over a local folder: len, ds[i], iteration in index order, transform, subclassing, tokens,
pickle refusal and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.resume import check_resume

from lit_streaming import StreamingDataLoader
from lit_streaming.dataset import StreamingDataset
from lit_streaming.format.index import InvalidIndexError
from lit_streaming.format.serializers import PickleNotAllowedError
from lit_streaming.item_loaders import TokensLoader
from lit_streaming_writer import optimize

N = 11


def sample(i: int) -> dict:
    return {"id": i, "x": np.full(3, i, dtype=np.float32), "name": f"n{i}"}


def token_record(i: int) -> np.ndarray:
    start = sum(2 + k % 5 for k in range(i))
    return np.arange(start, start + 2 + i % 5, dtype=np.int64)


class Opaque:
    """Not serializable by any typed serializer: stored with pickle."""

    def __init__(self, v: int) -> None:
        self.v = v


def pickled(i: int) -> dict:
    return {"id": i, "obj": Opaque(i)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return optimize(
        sample, list(range(N)), str(tmp_path_factory.mktemp("ds") / "d"), chunk_size=3, num_workers=1
    )


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("tok") / "t")
    return optimize(
        token_record, list(range(12)), out, chunk_size=10, num_workers=1, item_loader=TokensLoader()
    )


# ---- reading -----------------------------------------------------------------------------------------------
def test_len_getitem_and_iteration_order(data_dir):
    ds = StreamingDataset(data_dir)
    assert len(ds) == N
    for i in (0, 2, 3, 10, 5):  # across chunk boundaries, out of order
        got = ds[i]
        assert got["id"] == i and got["name"] == f"n{i}"
        assert got["x"].dtype == np.float32 and got["x"].tolist() == [i] * 3
    assert [s["id"] for s in ds] == list(range(N))
    assert [s["id"] for s in ds] == list(range(N))  # a second pass too


def test_input_dir_accepts_pathlike_and_file_url(data_dir):
    from pathlib import Path

    assert len(StreamingDataset(Path(data_dir))) == N
    assert StreamingDataset(f"file://{data_dir}")[4]["id"] == 4


@pytest.mark.parametrize("index", [N, N + 5, -1])
def test_out_of_range_index(data_dir, index):
    with pytest.raises(IndexError, match=f"Index {index} out of range"):
        StreamingDataset(data_dir)[index]


def test_transform_applies_to_getitem_and_iteration(data_dir):
    ds = StreamingDataset(data_dir, transform=lambda s: s["id"] * 2)
    assert ds[4] == 8
    assert list(ds) == [2 * i for i in range(N)]


class Doubled(StreamingDataset):
    """The README's "use any data transforms" pattern: subclass and override __getitem__."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return {"id": item["id"], "twice": item["x"] * 2}


def test_subclass_getitem_is_used_by_iteration(data_dir):
    ds = Doubled(data_dir)
    assert ds[3]["twice"].tolist() == [6.0] * 3
    got = list(ds)
    assert [s["id"] for s in got] == list(range(N))
    assert all(set(s) == {"id", "twice"} for s in got)


def test_dataloader_batches_in_index_order(data_dir):
    loader = torch.utils.data.DataLoader(StreamingDataset(data_dir), batch_size=4)
    batches = list(loader)
    assert torch.cat([b["id"] for b in batches]).tolist() == list(range(N))
    assert batches[0]["x"].shape == (4, 3)


def test_samples_are_usable_after_the_chunk_cache_moved_on(tmp_path):
    out = optimize(sample, list(range(40)), str(tmp_path / "d"), chunk_size=1, num_workers=1)
    ds = StreamingDataset(out)
    kept = [ds[i] for i in range(40)]  # far more chunks than stay open
    assert [s["x"][0] for s in kept] == list(range(40))


# ---- tokens ------------------------------------------------------------------------------------------------
def test_tokens_loader_reads_blocks(tokens_dir):
    chunks = json.loads(Path(tokens_dir, "index.json").read_text())["chunks"]
    ds = StreamingDataset(tokens_dir, item_loader=TokensLoader(block_size=4))
    stream = np.concatenate([token_record(i) for i in range(12)])
    want, start = [], 0
    for c in chunks:
        want += [stream[start + 4 * b : start + 4 * b + 4].tolist() for b in range(c["dim"] // 4)]
        start += c["dim"]
    assert len(ds) == len(want) == sum(c["dim"] // 4 for c in chunks)
    assert [ds[i].tolist() for i in range(len(ds))] == want
    assert [b.tolist() for b in ds] == want
    assert ds[0].dtype == np.int64


@pytest.mark.parametrize("workers", [0, 2])
def test_tokens_resume_mid_epoch(tokens_dir, workers):
    def make():
        ds = StreamingDataset(tokens_dir, item_loader=TokensLoader(block_size=2), shuffle=True)
        return StreamingDataLoader(ds, batch_size=3, num_workers=workers)

    check_resume(make, break_epoch=0, break_after=2)
    check_resume(make, break_epoch=1, break_after=1)


def test_tokens_dataset_needs_tokens_loader(tokens_dir):
    with pytest.raises(ValueError, match="TokensLoader"):
        StreamingDataset(tokens_dir)
    with pytest.raises(ValueError, match="block_size"):
        StreamingDataset(tokens_dir, item_loader=TokensLoader())


def test_tokens_loader_on_a_pytree_dataset_is_refused(data_dir):
    with pytest.raises(ValueError, match="PyTreeLoader"):
        StreamingDataset(data_dir, item_loader=TokensLoader(block_size=2))


@pytest.mark.parametrize("block_size", [0, -3, 2.5])
def test_tokens_loader_block_size_must_be_positive(block_size):
    with pytest.raises(ValueError, match="block_size"):
        TokensLoader(block_size)


# ---- pickle ------------------------------------------------------------------------------------------------
def test_pickle_is_refused_without_opt_in_and_read_with_it(tmp_path):
    out = optimize(pickled, list(range(4)), str(tmp_path / "p"), chunk_size=2, num_workers=1)
    assert json.loads(Path(out, "index.json").read_text())["config"]["data_format"] == ["int", "pickle"]
    with pytest.raises(PickleNotAllowedError, match=f"{out}.*allow_pickle=True"):
        StreamingDataset(out)
    ds = StreamingDataset(out, allow_pickle=True)
    assert [s["obj"].v for s in ds] == [0, 1, 2, 3]
    assert isinstance(ds[2]["obj"], Opaque)


# ---- bad input ---------------------------------------------------------------------------------------------
def test_missing_index_names_the_path(tmp_path):
    with pytest.raises(InvalidIndexError, match=f"No index.json at {tmp_path / 'index.json'}"):
        StreamingDataset(str(tmp_path))


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        StreamingDataset(str(tmp_path / "nope"))


# '{"chunks": [], "config": null}' is LitData's empty dataset, read as one (tests/test_empty_datasets.py)
@pytest.mark.parametrize(
    "text", ["", "{", "[1, 2]", '{"chunks": []}', '{"chunks": [], "config": 3}', "\x00\x01"]
)
def test_invalid_index_names_the_path(tmp_path, text):
    (tmp_path / "index.json").write_text(text)
    with pytest.raises(InvalidIndexError, match=str(tmp_path / "index.json")):
        StreamingDataset(str(tmp_path))


def test_unknown_serializer_is_a_clear_error(tmp_path, data_dir):
    index = json.loads(Path(data_dir, "index.json").read_text())
    index["config"]["data_format"][0] = "mystery"
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="mystery"):
        StreamingDataset(str(tmp_path))
