"""optimize and map as a distributed job: start this script with torchrun or ``fabric run``, on one node or
many. Every process is one writer; the output must be a folder all nodes share, or a URL (s3://...).

One node, two processes:
    torchrun --nproc-per-node=2 examples/writer_distributed.py OUTPUT
    fabric run --accelerator=cpu --devices=2 examples/writer_distributed.py OUTPUT

Two nodes (run on each, with NODE=0 on the first machine and NODE=1 on the second; MAIN is node 0's address):
    torchrun --nnodes=2 --node-rank=$NODE --nproc-per-node=4 --master-addr=$MAIN --master-port=29500 \
        examples/writer_distributed.py OUTPUT
    fabric run --accelerator=cpu --devices=4 --num-nodes=2 --node-rank=$NODE --main-address=$MAIN \
        --main-port=29500 examples/writer_distributed.py OUTPUT
"""

from __future__ import annotations

import os
import sys

from lit_streaming_writer import map, optimize


def sample(index: int):
    """A generator fn: several samples per input, streamed into the chunks."""
    for part in range(3):
        yield {"index": index, "part": part, "text": f"input {index}, part {part}"}


def write_file(index: int, folder: str) -> None:
    with open(os.path.join(folder, f"{index}.txt"), "w") as f:
        f.write(f"{index}\n")


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "writer_distributed_example"
    optimize(
        sample, inputs=list(range(5000)), output_dir=f"{root}/data", chunk_bytes="256KB", mode="overwrite"
    )
    map(write_file, inputs=list(range(200)), output_dir=f"{root}/files")
