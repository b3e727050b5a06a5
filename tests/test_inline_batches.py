"""Token batches read in the loader's process (one gather per batch): the same batches, in the same order, as
the worker path gives, for every worker count, rank, subset and resume point; and kept off wherever a batch
is not just the default collate of the samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.resume import check_resume
from torch.utils.data import default_collate

from lit_streaming import StreamingDataLoader, StreamingDataset, TokensLoader
from lit_streaming_writer import optimize

BLOCK = 5


def document(i: int) -> np.ndarray:
    return np.arange(i * 100, i * 100 + 7 + i % 5, dtype=np.int32)


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("inline") / "tokens")
    return optimize(document, list(range(60)), out, chunk_size=40, num_workers=1, item_loader=TokensLoader())


def _dataset(path: str, **kwargs) -> StreamingDataset:
    return StreamingDataset(path, item_loader=TokensLoader(block_size=BLOCK), **kwargs)


def _batches(loader) -> list[list[list[int]]]:
    return [batch.tolist() for batch in loader]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_inline_batches_equal_the_worker_path(tokens_dir, workers, shuffle):
    inline = StreamingDataLoader(_dataset(tokens_dir, shuffle=shuffle), batch_size=3, num_workers=workers)
    assert inline._inline
    # a collate_fn of one's own keeps the sample-by-sample path (workers, when asked for)
    by_samples = StreamingDataLoader(
        _dataset(tokens_dir, shuffle=shuffle), batch_size=3, num_workers=workers, collate_fn=default_collate
    )
    assert not by_samples._inline
    for _ in range(2):  # two epochs: each its own order
        got, want = _batches(inline), _batches(by_samples)
        assert got == want and len(got) == len(inline)
    first = next(iter(inline))
    assert isinstance(first, torch.Tensor) and first.dtype == torch.int32 and first.shape == (3, BLOCK)


@pytest.mark.parametrize("world_size", [2, 3])
def test_inline_ranks_split_exactly_once(tokens_dir, monkeypatch, world_size):
    blocks = []
    for rank in range(world_size):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
        loader = StreamingDataLoader(_dataset(tokens_dir, shuffle=True), batch_size=2, num_workers=2)
        blocks.append([tuple(block) for batch in _batches(loader) for block in batch])
    assert len({len(b) for b in blocks}) == 1  # equal lengths per rank (drop_last when distributed)
    everything = [block for rank_blocks in blocks for block in rank_blocks]
    assert len(set(everything)) == len(everything)  # no block twice


def test_inline_subset_and_resume(tokens_dir):
    subset = _dataset(tokens_dir, shuffle=True).subset(range(3, 40))
    loader = StreamingDataLoader(subset, batch_size=4, num_workers=2)
    assert loader._inline
    reference = StreamingDataLoader(subset, batch_size=4, num_workers=0, collate_fn=default_collate)
    assert _batches(loader) == _batches(reference)
    check_resume(
        lambda: StreamingDataLoader(_dataset(tokens_dir, shuffle=True), batch_size=3, num_workers=2), 0, 4
    )
    check_resume(
        lambda: StreamingDataLoader(_dataset(tokens_dir, shuffle=True), batch_size=3, num_workers=2), 1, 2
    )


class Shifted(StreamingDataset):
    def __getitem__(self, index):
        return super().__getitem__(index) + 1


def test_inline_is_off_where_samples_are_changed_one_by_one(tokens_dir, tmp_path):
    plain = _dataset(tokens_dir)
    assert not StreamingDataLoader(_dataset(tokens_dir, transform=lambda t: t * 2), batch_size=2)._inline
    assert not StreamingDataLoader(
        Shifted(tokens_dir, item_loader=TokensLoader(block_size=BLOCK)), batch_size=2
    )._inline
    assert not StreamingDataLoader(plain, batch_size=2, profile_batches=1, profile_dir=str(tmp_path))._inline
    assert not StreamingDataLoader(plain, batch_size=2, num_workers=1, worker_init_fn=print)._inline
    # the subclass's __getitem__ runs for every sample
    shifted = StreamingDataLoader(
        Shifted(tokens_dir, item_loader=TokensLoader(block_size=BLOCK)), batch_size=2
    )
    assert next(iter(shifted)).tolist() == (next(iter(StreamingDataLoader(plain, batch_size=2))) + 1).tolist()


def test_read_batch_names_out_of_range_indices(tokens_dir):
    ds = _dataset(tokens_dir)
    assert ds.read_batch(np.array([0, len(ds) - 1])).tolist() == [ds[0].tolist(), ds[len(ds) - 1].tolist()]
    with pytest.raises(IndexError, match="out of range"):
        ds.read_batch(np.array([0, len(ds)]))
    with pytest.raises(IndexError, match="out of range"):
        ds.read_batch(np.array([-1]))
