"""optimize and map on one machine: the workers are Fabric processes started by the call itself.

    python examples/writer_single_machine.py [OUTPUT_DIR]

OUTPUT_DIR may be a local folder or a URL such as s3://bucket/prefix (credentials from the environment).
Run it twice: the second run refuses to overwrite the dataset; interrupt it midway (Ctrl-C) and run it again:
it continues from the workers' checkpoints.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np

from lit_streaming import StreamingDataset
from lit_streaming_writer import map, optimize


def tokenize(index: int, vocab: int) -> dict:
    """One sample per input. Module-level (or a functools.partial of one): workers are forked, so lambdas
    work too, but a named function also works under torchrun and in Fabric scripts."""
    rng = np.random.default_rng(index)
    return {"index": index, "tokens": rng.integers(0, vocab, size=16, dtype=np.int32)}


def write_report(index: int, folder: str) -> None:
    """map fns write files into ``folder`` (local to the worker); they are published to output_dir."""
    os.makedirs(os.path.join(folder, "reports"), exist_ok=True)
    with open(os.path.join(folder, "reports", f"{index:05d}.txt"), "w") as f:
        f.write(f"input {index}\n")


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "writer_example"
    data = optimize(
        functools.partial(tokenize, vocab=1000),
        inputs=list(range(10_000)),
        output_dir=f"{root}/tokens",
        chunk_bytes="1MB",
        num_workers=2,
        mode="overwrite",
    )
    map(write_report, inputs=list(range(100)), output_dir=f"{root}/files", num_workers=2)
    if "://" not in data:
        dataset = StreamingDataset(data)
        print(f"{data}: {len(dataset)} samples; sample 42 has index {dataset[42]['index']}")
