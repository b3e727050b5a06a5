"""Bound the local cache (README: ``max_cache_size``): chunks of a remote dataset are downloaded into
``cache_dir`` and evicted once read, so disk use stays near ``max_cache_size`` however large the dataset is.

The "remote" here is a local folder read through ``local:``, which goes through the cache exactly like
``s3://`` would (use it for datasets on a network drive).

    python examples/max_cache_size.py WORKDIR
"""

import argparse
import os

import numpy as np

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming_writer import optimize


def make_sample(index):
    return {"index": index, "payload": np.full(1000, index % 256, np.uint8)}  # ~1 kB per sample


def folder_bytes(folder):
    """Bytes under ``folder`` now; a chunk evicted while we walk simply no longer counts."""
    total = 0
    for d, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except FileNotFoundError:
                pass
    return total


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    args = parser.parse_args()
    remote = os.path.join(args.workdir, "network_drive_dataset")
    cache_dir = os.path.join(args.workdir, "cache")
    optimize(make_sample, list(range(3000)), remote, chunk_bytes="100KB", num_workers=1, mode="overwrite")
    dataset_bytes = folder_bytes(remote)

    dataset = StreamingDataset(
        f"local:{os.path.abspath(remote)}",
        cache_dir=cache_dir,
        max_cache_size="1MB",
        shuffle=True,
        shuffle_window=2,  # chunks mixed (and held open) at once: keep it well below the cache bound
    )
    peak, seen = 0, []
    for batch in StreamingDataLoader(dataset, batch_size=50):
        seen.extend(batch["index"].tolist())
        peak = max(peak, folder_bytes(cache_dir))
    assert sorted(seen) == list(range(3000))
    chunk = max(os.path.getsize(os.path.join(remote, c)) for c in os.listdir(remote) if c.endswith(".bin"))
    print(f"dataset {dataset_bytes / 1e6:.1f} MB, cache peak {peak / 1e6:.2f} MB (max_cache_size 1 MB)")
    assert (
        peak <= 1_000_000 + 2 * chunk + 100_000
    ), peak  # the bound, plus in-flight chunks and small metadata
