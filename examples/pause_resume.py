"""Pause and resume (README section 2, "Guarantees (resume)"): save ``StreamingDataLoader.state_dict()`` every
few batches; a new process that loads it continues with exactly the batches the uninterrupted run would have
yielded next.

    python examples/pause_resume.py WORKDIR
"""

import argparse
import os

import torch

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming_writer import optimize


def make_sample(index):
    return {"index": index}


def make_loader(input_dir):
    return StreamingDataLoader(StreamingDataset(input_dir, shuffle=True), batch_size=16, num_workers=2)


def train(input_dir, state_file, stop_after=None):
    """One epoch; returns the sample indices seen. Saves the loader state every 5 batches."""
    loader = make_loader(input_dir)
    if os.path.isfile(state_file):  # restore the loader state if it exists
        loader.load_state_dict(torch.load(state_file))  # plain Python: loads with weights_only=True
    seen = []
    for batch_idx, batch in enumerate(loader):
        seen.extend(batch["index"].tolist())
        if batch_idx % 5 == 4:
            torch.save(loader.state_dict(), state_file)
        if stop_after is not None and batch_idx + 1 == stop_after:
            break  # "the job was preempted"
    return seen


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    args = parser.parse_args()
    input_dir = os.path.join(args.workdir, "pause_resume_data")
    state_file = os.path.join(args.workdir, "dataloader_state.pt")
    optimize(make_sample, list(range(300)), input_dir, chunk_size=25, num_workers=1, mode="overwrite")
    if os.path.exists(state_file):
        os.remove(state_file)

    uninterrupted = [i for batch in make_loader(input_dir) for i in batch["index"].tolist()]
    first = train(input_dir, state_file, stop_after=7)  # state saved after batch 5; batches 6-7 are lost
    rest = train(input_dir, state_file)  # picks up after batch 5
    assert first[: 5 * 16] + rest == uninterrupted
    print(f"stopped after 7 batches, resumed after batch 5: {len(rest)} more samples, identical to one run")
