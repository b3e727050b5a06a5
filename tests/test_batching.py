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


@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.int8, torch.uint16, torch.int16, torch.float32, torch.float64]
)
@pytest.mark.parametrize("hwc", [(1, 1, 3), (1, 5, 3), (7, 3, 4), (5, 5, 2), (3, 3, 16), (256, 320, 3)])
def test_stack_into_deinterleaves_hwc_views_exactly(dtype, hwc):
    from lit_streaming.engine.batching import stack_into

    generator = torch.Generator().manual_seed(hwc[0] * 31 + hwc[2])
    images = [torch.randint(0, 100, hwc, generator=generator).to(dtype).permute(2, 0, 1) for _ in range(3)]
    out = torch.full((3, hwc[2], hwc[0], hwc[1]), 7, dtype=dtype)
    assert stack_into(out, images) is out
    assert torch.equal(out, torch.stack(images))


def test_stack_into_keeps_torch_stack_for_other_layouts():
    from lit_streaming.engine.batching import stack_into

    hwc = torch.arange(2 * 4 * 3, dtype=torch.uint8).view(2, 4, 3)
    cases = [
        [hwc.permute(2, 0, 1).contiguous()] * 2,  # contiguous CHW
        [hwc.permute(2, 0, 1), hwc.permute(2, 0, 1).contiguous()],  # a view next to a contiguous image
        [hwc.permute(2, 0, 1).to(torch.int64)] * 2,  # a dtype OpenCV has no depth for
        [hwc.permute(2, 1, 0)] * 2,  # CWH: not HWC memory
    ]
    for images in cases:
        out = torch.zeros((2, *images[0].shape), dtype=images[0].dtype)
        assert torch.equal(stack_into(out, images), torch.stack(images))


def test_decoded_jpeg_batches_equal_single_process_ones(tmp_path):
    """JPEG leaves decode to CHW views of HWC memory: worker batches (SIMD split into slots) equal main-process ones."""
    from PIL import Image

    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(96):
        pixels = np.random.default_rng(i).integers(0, 255, (48, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(raw / f"{i}.jpg", quality=90)

    def jpeg(i: int) -> dict:
        return {"image": Image.open(raw / f"{i}.jpg"), "i": i}

    out = str(tmp_path / "ds")
    optimize(jpeg, list(range(96)), out, chunk_size=24, num_workers=1)
    pooled = StreamingDataLoader(StreamingDataset(out), batch_size=16, num_workers=2)
    plain = StreamingDataLoader(StreamingDataset(out), batch_size=16, num_workers=0)
    assert isinstance(pooled.collate_fn, PooledCollate)
    pairs = list(zip(pooled, plain))
    assert len(pairs) == 6
    for a, b in pairs:
        assert a["image"].shape == (16, 3, 48, 40) and a["image"].is_contiguous()
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["i"], b["i"])
