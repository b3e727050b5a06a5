"""Transforms with torchvision.transforms.v2 (README section 2): pass ``transform=`` or subclass
``StreamingDataset`` and override ``__getitem__`` (iteration goes through it too).

    python examples/transforms.py WORKDIR
"""

import argparse
import os

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming_writer import optimize


def random_images(index):
    rng = np.random.default_rng(index)
    return {
        "index": index,
        "image": Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)),
        "class": index % 10,
    }


augment = T.Compose([T.ToImage(), T.RandomResizedCrop((32, 32), antialias=True), T.RandomHorizontalFlip()])
to_float = T.ToDtype(torch.float32, scale=True)


def transform(sample):
    """Way 1: ``StreamingDataset(..., transform=transform)`` applies it to every sample."""
    return {**sample, "image": to_float(augment(sample["image"]))}


class ImagesDataset(StreamingDataset):
    """Way 2: a subclass that overrides ``__getitem__``."""

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        return to_float(augment(sample["image"])), sample["class"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    args = parser.parse_args()
    input_dir = os.path.join(args.workdir, "images")
    optimize(random_images, list(range(200)), input_dir, chunk_size=40, num_workers=1, mode="overwrite")

    loader = StreamingDataLoader(
        StreamingDataset(input_dir, shuffle=True, transform=transform), batch_size=32
    )
    batch = next(iter(loader))
    assert batch["image"].shape == (32, 3, 32, 32) and batch["image"].dtype == torch.float32
    print("transform=:", tuple(batch["image"].shape), batch["image"].dtype)

    loader = StreamingDataLoader(ImagesDataset(input_dir, shuffle=True), batch_size=32, num_workers=2)
    images, classes = next(iter(loader))
    assert images.shape == (32, 3, 32, 32) and float(images.max()) <= 1.0
    print("subclass:", tuple(images.shape), classes[:8].tolist())
