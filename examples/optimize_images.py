"""Optimize images (README section 1): a function returns one sample per input; ``optimize`` writes chunks.

python examples/optimize_images.py WORKDIR      # writes WORKDIR/my_optimized_dataset
"""

import argparse
import os

import numpy as np
from PIL import Image

from lit_streaming_writer import optimize


def random_images(index):
    return {
        "index": index,
        "image": Image.fromarray(np.random.randint(0, 256, (32, 32, 3), np.uint8)),
        "class": np.random.randint(10),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    output_dir = os.path.join(args.workdir, "my_optimized_dataset")
    optimize(
        fn=random_images,
        inputs=list(range(args.count)),
        output_dir=output_dir,
        num_workers=2,
        chunk_bytes="64MB",
        mode="overwrite",
    )

    from lit_streaming import StreamingDataset

    dataset = StreamingDataset(output_dir)
    assert len(dataset) == args.count and dataset[42]["index"] == 42
    print(f"{output_dir}: {len(dataset)} samples; sample 42 has class {dataset[42]['class']}")
