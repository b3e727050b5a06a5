"""Stream a dataset (README section 2): random access with ``StreamingDataset`` and shuffled batches with
``StreamingDataLoader``; every sample exactly once per epoch, a new order every epoch.

    python examples/stream_dataset.py WORKDIR       # writes WORKDIR/stream_dataset first
"""

import argparse
import os

import numpy as np

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming_writer import optimize


def make_sample(index):
    return {"index": index, "features": np.full(8, index, np.float32), "label": index % 10}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    args = parser.parse_args()
    input_dir = os.path.join(args.workdir, "stream_dataset")
    optimize(make_sample, list(range(500)), input_dir, chunk_size=50, num_workers=1, mode="overwrite")

    dataset = StreamingDataset(input_dir, shuffle=True)
    print(len(dataset), dataset[42]["index"])  # random access reads one chunk through mmap

    loader = StreamingDataLoader(dataset, batch_size=64, num_workers=2)
    epochs = []
    for epoch in range(2):
        seen = []
        for batch in loader:
            assert batch["features"].shape[1:] == (8,)
            seen.extend(batch["index"].tolist())
        assert sorted(seen) == list(range(len(dataset))), "every sample exactly once per epoch"
        epochs.append(seen)
        print(f"epoch {epoch}: {len(loader)} batches, first indices {seen[:5]}")
    assert epochs[0] != epochs[1], "a new shuffle every epoch"
