"""Memory-light optimize (README section 1): when one input is a large file, make ``fn`` a generator that
yields one sample at a time, so a worker never holds a whole file in memory.

    python examples/optimize_generator.py WORKDIR
"""

import argparse
import csv
import os

import numpy as np

from lit_streaming import StreamingDataset
from lit_streaming_writer import optimize

ROWS_PER_FILE = 2000


def write_raw_files(folder, count):
    """Stand-ins for large raw files: CSVs of (id, 16 feature values)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for f in range(count):
        path = os.path.join(folder, f"part-{f:03d}.csv")
        rng = np.random.default_rng(f)
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            for r in range(ROWS_PER_FILE):
                writer.writerow([f * ROWS_PER_FILE + r, *np.round(rng.random(16), 4)])
        paths.append(path)
    return paths


def rows(filepath):
    """Yields one sample per CSV row: only the current row is in memory."""
    with open(filepath, newline="") as f:
        for row in csv.reader(f):
            yield {"id": int(row[0]), "features": np.asarray(row[1:], np.float32)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    args = parser.parse_args()
    files = write_raw_files(os.path.join(args.workdir, "raw_csv"), count=6)
    output_dir = os.path.join(args.workdir, "from_generator")
    optimize(
        fn=rows, inputs=files, output_dir=output_dir, chunk_bytes="64KB", num_workers=2, mode="overwrite"
    )

    dataset = StreamingDataset(output_dir)
    assert len(dataset) == len(files) * ROWS_PER_FILE
    assert [dataset[i]["id"] for i in (0, 1, len(dataset) - 1)] == [
        0,
        1,
        len(dataset) - 1,
    ]  # input order kept
    print(f"{len(files)} files -> {len(dataset)} samples in {len(dataset.chunk_lengths)} chunks")
