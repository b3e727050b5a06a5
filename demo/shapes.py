"""A labelled image set drawn by code (no download): circles, squares and triangles in random colours."""

from __future__ import annotations

import argparse
import io
import os

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def draw(index: int, size: int = 32) -> dict:
    rng = np.random.default_rng(index)
    label = int(index % len(CLASSES))
    background = tuple(int(c) for c in rng.integers(0, 90, 3))
    color = tuple(int(c) for c in rng.integers(120, 256, 3))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
    if label == 0:
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif label == 1:
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    encoded = io.BytesIO()
    image.save(encoded, format="JPEG", quality=90)
    encoded.seek(0)
    # Stored as the JPEG bytes; it streams back as a decoded uint8 CHW tensor.
    return {"index": index, "image": Image.open(encoded), "label": label}


def prepare(root: str, train: int = 6000, val: int = 600, num_workers: int = 2) -> tuple[str, str]:
    """Optimize the train and validation splits under ``root`` (skipped when already there)."""
    from lit_streaming_writer import optimize

    out = []
    for split, count, offset in (("train", train, 0), ("val", val, 10**6)):
        path = os.path.join(root, split)
        if not os.path.exists(os.path.join(path, "index.json")):
            optimize(draw, range(offset, offset + count), path, chunk_bytes="256KB", num_workers=num_workers)
        out.append(path)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate and optimize the shapes demo dataset.")
    parser.add_argument("root", nargs="?", default=".demo/shapes")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--val", type=int, default=600)
    args = parser.parse_args()
    train, val = prepare(args.root, args.train, args.val)
    print(f"train: {train}\nval:   {val}")


if __name__ == "__main__":
    main()
