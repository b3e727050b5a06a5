"""The raw data every library writes from: JPEG files with labels and an int32 token stream.

Generated once per size and cached under ``<data-dir>/raw/<size>/``; deterministic (numpy ``default_rng``
seeded per image), so every run and every machine sees the same bytes. ``manifest.json`` is written last and
marks a complete cache.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from bench.config import IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES, VOCAB, Sizes

SEED = 20_240_607
VERSION = 1


@dataclass(frozen=True)
class Raw:
    """Where the generated data of one size lives."""

    root: str

    @property
    def images_dir(self) -> str:
        return os.path.join(self.root, "images")

    def image_path(self, i: int) -> str:
        return os.path.join(self.images_dir, f"{i:06d}.jpg")

    def labels(self) -> np.ndarray:
        return np.load(os.path.join(self.root, "labels.npy"))

    def tokens(self) -> np.ndarray:
        """The token stream, memory-mapped (int32)."""
        return np.load(os.path.join(self.root, "tokens.npy"), mmap_mode="r")

    def doc_offsets(self) -> np.ndarray:
        """Document ``d`` is ``tokens[offsets[d]:offsets[d + 1]]``."""
        return np.load(os.path.join(self.root, "doc_offsets.npy"))

    def manifest(self) -> dict:
        with open(os.path.join(self.root, "manifest.json")) as f:
            return json.load(f)


def make_jpeg(i: int) -> bytes:
    """A 320x256 photo-like JPEG: a smooth random colour field (bicubic upsampling of a coarse random grid)
    plus Gaussian sensor noise, quality 90; the noise level varies per image so files are ~15-28 KB."""
    import io

    from PIL import Image

    rng = np.random.default_rng([SEED, i])
    grid = (int(rng.integers(2, 7)), int(rng.integers(2, 8)))
    coarse = rng.integers(0, 256, (*grid, 3), dtype=np.uint8)
    base = np.asarray(
        Image.fromarray(coarse).resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.BICUBIC), dtype=np.float32
    )
    noise = rng.standard_normal(base.shape, dtype=np.float32) * np.float32(rng.uniform(4.0, 10.0))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _write_images(args: tuple[str, int, int]) -> int:
    folder, start, end = args
    total = 0
    for i in range(start, end):
        data = make_jpeg(i)
        with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
            f.write(data)
        total += len(data)
    return total


def _expected_manifest(sizes: Sizes) -> dict:
    return dict(
        version=VERSION,
        seed=SEED,
        images=sizes.images,
        tokens=sizes.tokens,
        mean_doc_tokens=sizes.mean_doc_tokens,
        width=IMAGE_WIDTH,
        height=IMAGE_HEIGHT,
    )


def ensure(data_dir: str, sizes: Sizes, log=print) -> Raw:
    """The cached raw data of ``sizes`` under ``data_dir``, generated first when missing or stale."""
    raw = Raw(os.path.join(data_dir, "raw", sizes.name))
    expected = _expected_manifest(sizes)
    try:
        manifest = raw.manifest()
        if {k: manifest.get(k) for k in expected} == expected:
            return raw
    except (OSError, ValueError):
        pass
    t0 = time.perf_counter()
    shutil.rmtree(raw.root, ignore_errors=True)
    os.makedirs(raw.images_dir)
    n = sizes.images
    procs = max(1, min(os.cpu_count() or 1, 8))
    step = -(-n // (procs * 8))
    parts = [(raw.images_dir, s, min(n, s + step)) for s in range(0, n, step)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        image_bytes = sum(pool.map(_write_images, parts))
    rng = np.random.default_rng([SEED, 1])
    np.save(os.path.join(raw.root, "labels.npy"), rng.integers(0, NUM_CLASSES, n).astype(np.int64))
    tokens = np.random.default_rng([SEED, 2]).integers(0, VOCAB, sizes.tokens, dtype=np.int32)
    np.save(os.path.join(raw.root, "tokens.npy"), tokens)
    lengths = np.maximum(
        16, np.random.default_rng([SEED, 3]).exponential(sizes.mean_doc_tokens, sizes.tokens // 16)
    ).astype(np.int64)
    ends = np.cumsum(lengths)
    ends = ends[ends < sizes.tokens]
    offsets = np.concatenate([[0], ends, [sizes.tokens]]).astype(np.int64)
    np.save(os.path.join(raw.root, "doc_offsets.npy"), offsets)
    manifest = dict(expected, image_bytes=int(image_bytes), documents=len(offsets) - 1)
    with open(os.path.join(raw.root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    log(
        f"generated {n} JPEGs ({image_bytes / 1e6:.0f} MB, mean {image_bytes / n / 1e3:.1f} KB), "
        f"{sizes.tokens / 1e6:.0f}M tokens in {len(offsets) - 1} documents in {time.perf_counter() - t0:.0f}s"
    )
    return raw
