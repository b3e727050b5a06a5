"""LitData's leaf wrappers (``ld.Image(...)`` and friends) come from both packages, and workers whose first
samples store different file types of one kind (``image:jpg`` vs ``image:png``) merge into one dataset."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import lit_streaming
import lit_streaming_writer
from lit_streaming import StreamingDataset
from lit_streaming.format import serializers
from lit_streaming.format.index import ChunkEntry, DatasetIndex, InvalidIndexError, merge_indexes
from lit_streaming_writer import optimize

WRAPPERS = ("Image", "Video", "Audio", "File", "Text", "Tiff")


@pytest.mark.parametrize("name", WRAPPERS)
def test_wrappers_are_exported_by_both_packages(name):
    assert getattr(lit_streaming_writer, name) is getattr(serializers, name)
    assert getattr(lit_streaming, name) is getattr(serializers, name)
    assert name in lit_streaming_writer.__all__ and name in lit_streaming.__all__


def test_the_wrappers_keep_import_lit_streaming_light():
    code = "import sys, lit_streaming; lit_streaming.Image; print('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(done.stdout.split())
    assert not any(m.startswith(("lit_streaming.dataset", "lit_streaming.storage")) for m in loaded)


@pytest.fixture
def pictures(tmp_path):
    """Two small pictures, one saved as a (lossless-ish, high quality) JPEG and one as a PNG."""
    rng = np.random.default_rng(0)
    paths = {}
    for ext in ("jpg", "png"):
        array = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        path = tmp_path / f"picture.{ext}"
        PILImage.fromarray(array).save(path, quality=100) if ext == "jpg" else PILImage.fromarray(array).save(
            path
        )
        paths[ext] = str(path)
    return paths


def _picture(i: int, paths: dict[str, str]) -> dict:
    ext = "jpg" if i in (0, 3) else "png"  # worker 0 (inputs 0, 1) sees a .jpg first, worker 1 (2, 3) a .png
    return {
        "id": i,
        "image": lit_streaming.Image(path=paths[ext]),
    }  # as a LitData script writes ld.Image(...)


def test_workers_whose_first_images_differ_in_file_type_merge(tmp_path, pictures):
    out = optimize(
        functools.partial(_picture, paths=pictures),
        list(range(4)),
        str(tmp_path / "ds"),
        chunk_size=2,
        num_workers=2,
    )
    index = json.loads((tmp_path / "ds" / "index.json").read_text())
    assert index["config"]["data_format"] == ["int", "image:jpg"]  # the first worker's name, as LitData
    assert [c["filename"] for c in index["chunks"]] == ["chunk-0-0.bin", "chunk-1-0.bin"]
    ds = StreamingDataset(out)
    assert [ds[i]["id"] for i in range(len(ds))] == [0, 1, 2, 3]
    for i in range(4):
        ext = "jpg" if i in (0, 3) else "png"
        want = torch.from_numpy(np.array(PILImage.open(pictures[ext]).convert("RGB"))).permute(2, 0, 1)
        got = ds[i]["image"]
        assert got.dtype == torch.uint8 and got.shape == want.shape, i
        if ext == "png":
            assert torch.equal(got, want), i
        else:  # decoders may differ by a rounding step
            assert (got.int() - want.int()).abs().max() <= 8, i


def _part(data_format: list[str], name: str) -> DatasetIndex:
    config = {"chunk_bytes": None, "chunk_size": 2, "compression": None, "data_format": data_format}
    return DatasetIndex(chunks=[ChunkEntry(name, 1, 40)], config=config)


def test_merge_indexes_compares_columns_as_the_writer_does():
    merged = merge_indexes([_part(["int", "pil"], "a.bin"), _part(["int", "jpeg"], "b.bin")], "out")
    assert merged.config["data_format"] == ["int", "pil"] and len(merged.chunks) == 2
    merged = merge_indexes([_part(["video:mp4"], "a.bin"), _part(["video:webm"], "b.bin")], "out")
    assert merged.config["data_format"] == ["video:mp4"]
    for other in (["str", "pil"], ["int", "image:png"], ["int"]):
        with pytest.raises(InvalidIndexError, match="data_format"):
            merge_indexes([_part(["int", "pil"], "a.bin"), _part(other, "b.bin")], "out")
    with pytest.raises(InvalidIndexError, match="data_format"):
        merge_indexes([_part(["image:jpg"], "a.bin"), _part(["video:jpg"], "b.bin")], "out")
