"""optimize inside a Fabric script: every Fabric process is one writer, rank 0 merges the index.

    python examples/writer_fabric_script.py [OUTPUT_DIR]

``fabric.launch()`` with the ``ddp`` strategy re-runs this script for ranks 1..N-1, so the optimize call
below runs on every rank; each rank writes its own contiguous share of the inputs and the call returns on
every rank once rank 0 has published index.json. Under ``fabric run`` or ``torchrun`` the processes already
exist: drop the ``launch()`` call (see examples/writer_distributed.py).
"""

from __future__ import annotations

import sys

from lightning.fabric import Fabric

from lit_streaming import StreamingDataset
from lit_streaming_writer import optimize


def square(index: int) -> dict:
    return {"index": index, "square": index * index}


if __name__ == "__main__":
    output_dir = sys.argv[1] if len(sys.argv) > 1 else "writer_fabric_example"
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
    fabric.launch()
    optimize(square, inputs=list(range(1000)), output_dir=output_dir, chunk_size=100, mode="overwrite")
    if fabric.global_rank == 0:
        dataset = StreamingDataset(output_dir)
        print(f"rank 0: {len(dataset)} samples written by {fabric.world_size} ranks")
