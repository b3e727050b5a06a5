"""Empty datasets (every input skipped): ours (an index with no chunks and no data format) and LitData's
(``"config": null``) open with length 0 and iterate nothing, through a StreamingDataLoader too."""

from __future__ import annotations

import json

import pytest
from support.resume import check_resume

from lit_streaming import StreamingDataLoader, StreamingDataset, TokensLoader
from lit_streaming_writer import optimize

# What litdata 0.2.76's optimize publishes when fn returns None for every input (checked by running it).
LITDATA_EMPTY_INDEX = {"chunks": [], "config": None, "updated_at": "1796174999.4440718"}


def _skip(i: int) -> None:
    return None


def _sample(i: int) -> dict:
    return {"i": i}


@pytest.fixture(params=["ours", "litdata"])
def empty_dataset(request, tmp_path):
    out = tmp_path / request.param
    if request.param == "ours":
        optimize(_skip, list(range(6)), str(out), chunk_size=2, num_workers=1)
        index = json.loads((out / "index.json").read_text())
        assert index["chunks"] == [] and not index["config"]["data_format"]
    else:
        out.mkdir()
        (out / "index.json").write_text(json.dumps(LITDATA_EMPTY_INDEX))
    return out


@pytest.mark.parametrize("shuffle", [False, True])
def test_an_empty_dataset_has_no_samples(empty_dataset, shuffle):
    ds = StreamingDataset(str(empty_dataset), shuffle=shuffle)
    assert len(ds) == 0
    assert list(ds) == []
    with pytest.raises(IndexError):
        ds[0]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_empty_dataset_through_a_loader(empty_dataset, num_workers):
    loader = StreamingDataLoader(
        StreamingDataset(str(empty_dataset), shuffle=True), batch_size=4, num_workers=num_workers
    )
    assert len(loader) == 0
    assert list(loader) == []

    def make():
        return StreamingDataLoader(
            StreamingDataset(str(empty_dataset), shuffle=True), batch_size=4, num_workers=num_workers
        )

    check_resume(make, break_epoch=1, break_after=0)  # an empty epoch's state saves, loads and resumes


def test_an_empty_dataset_through_the_cache(empty_dataset, tmp_path):
    ds = StreamingDataset(f"local:{empty_dataset}", cache_dir=str(tmp_path / "cache"), max_cache_size="1MB")
    assert len(ds) == 0 and list(ds) == []


def test_an_empty_token_dataset(tmp_path, empty_dataset):
    """LitData's empty index names no item loader, so a token reader opens it; ours was written by the
    PyTreeLoader, so asking for tokens is the usual mismatch error."""
    if empty_dataset.name == "litdata":
        ds = StreamingDataset(str(empty_dataset), item_loader=TokensLoader(block_size=8))
        assert len(ds) == 0 and list(ds) == []
    else:
        with pytest.raises(ValueError, match="written with PyTreeLoader"):
            StreamingDataset(str(empty_dataset), item_loader=TokensLoader(block_size=8))
    out = tmp_path / "tokens"
    optimize(_skip, list(range(4)), str(out), chunk_size=16, num_workers=1, item_loader=TokensLoader())
    ds = StreamingDataset(str(out), item_loader=TokensLoader(block_size=8))
    assert len(ds) == 0 and list(ds) == []


def test_a_config_without_chunks_is_still_required_when_chunks_exist(tmp_path):
    from lit_streaming.format.index import InvalidIndexError

    (tmp_path / "index.json").write_text(
        json.dumps(
            {
                "chunks": [{"filename": "c.bin", "chunk_size": 1, "chunk_bytes": 20, "dim": None}],
                "config": None,
            }
        )
    )
    with pytest.raises(InvalidIndexError, match="no 'config' object"):
        StreamingDataset(str(tmp_path))


def test_an_empty_dataset_in_a_mix(empty_dataset, tmp_path):
    from lit_streaming import CombinedStreamingDataset

    full = optimize(_sample, list(range(10)), str(tmp_path / "full"), chunk_size=3, num_workers=1)
    mix = CombinedStreamingDataset([StreamingDataset(str(empty_dataset)), StreamingDataset(full)])
    assert len(mix) == 10
    assert sorted(s["i"] for s in mix) == list(range(10))
