"""Pooled shared-memory batch slots: reused when dropped, never overwritten while held."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming.engine.batching import PooledCollate
from lit_streaming_writer import optimize

SHAPE = (3, 64, 64)  # 12 KiB per sample: batches of 32 are pooled


def _sample(i: int) -> dict:
    return {"id": i, "pixels": np.full(SHAPE, i % 251, dtype=np.uint8), "small": np.array([i], np.int64)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool_ds")
    optimize(_sample, list(range(600)), str(out), chunk_size=50, num_workers=1)
    return str(out)


def _check(batch):
    ids = batch["id"]
    expected = (ids % 251).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, *SHAPE)
    assert torch.equal(batch["pixels"], expected), "a held batch was overwritten"
    assert torch.equal(batch["small"].view(-1), ids)


def test_held_batches_stay_intact(data_dir):
    loader = StreamingDataLoader(StreamingDataset(data_dir, shuffle=True), batch_size=32, num_workers=2)
    assert isinstance(loader.collate_fn, PooledCollate)
    held = list(loader)  # every batch of the epoch alive at once
    for batch in held:
        _check(batch)
    assert sorted(i for b in held for i in b["id"].tolist()) == list(range(600))


def test_slots_are_recycled(data_dir):
    loader = StreamingDataLoader(StreamingDataset(data_dir), batch_size=32, num_workers=2)
    for _ in range(2):
        for batch in loader:
            _check(batch)
            del batch
            gc.collect()
    table = loader.collate_fn.table
    # Each worker needed only a couple of slots (prefetch depth), not one per batch.
    assert int((table != 0).sum()) <= 2 * 4


def test_pooled_batches_are_views_with_plain_semantics(data_dir):
    loader = StreamingDataLoader(StreamingDataset(data_dir), batch_size=32, num_workers=1)
    batch = next(iter(loader))
    pixels = batch["pixels"]
    assert pixels.shape == (32, *SHAPE) and pixels.dtype == torch.uint8 and pixels.is_contiguous()
    pixels += 1  # writable, like any batch
    assert int(pixels[0, 0, 0, 0]) == 1


def test_pin_memory_keeps_default_collate(data_dir):
    loader = StreamingDataLoader(StreamingDataset(data_dir), batch_size=8, num_workers=1, pin_memory=True)
    assert not isinstance(loader.collate_fn, PooledCollate)
