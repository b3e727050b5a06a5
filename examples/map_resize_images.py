"""Resize a folder of images with ``map`` (README: "Transform datasets"): ``fn(input, output_dir)`` writes files
into a worker-local folder, published to ``output_dir`` with their relative paths.

    python examples/map_resize_images.py WORKDIR
"""

import argparse
import os

import numpy as np
from PIL import Image

from lit_streaming_writer import map


def resize_image(image_path, output_dir):
    output_image_path = os.path.join(output_dir, os.path.basename(image_path))
    Image.open(image_path).resize((64, 64)).save(output_image_path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    args = parser.parse_args()
    source = os.path.join(args.workdir, "raw_images")
    os.makedirs(source, exist_ok=True)
    rng = np.random.default_rng(0)
    inputs = []
    for i in range(40):
        path = os.path.join(source, f"image_{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (128, 96, 3), dtype=np.uint8)).save(path)
        inputs.append(path)

    output = os.path.join(args.workdir, "resized_images")
    map(fn=resize_image, inputs=inputs, output_dir=output, num_workers=2)

    written = sorted(os.listdir(output))
    assert written == sorted(os.path.basename(p) for p in inputs), written
    assert all(Image.open(os.path.join(output, name)).size == (64, 64) for name in written)
    print(f"resized {len(written)} images into {output}")
