"""Mix token datasets (README sections 3 and 4): two corpora written with ``TokensLoader``, read as fixed-size
blocks and mixed 70/30 by ``CombinedStreamingDataset``.

    python examples/combined_tokens.py WORKDIR
"""

import argparse
import os

import numpy as np

from lit_streaming import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset, TokensLoader
from lit_streaming_writer import optimize

BLOCK = 64 + 1  # context + next token


def slimpajama_like(index):
    """A "document" of tokens below 1000 (a generator: any number of records per input)."""
    rng = np.random.default_rng(index)
    for _ in range(3):
        yield rng.integers(0, 1000, int(rng.integers(50, 300)), dtype=np.int32)


def starcoder_like(index):
    rng = np.random.default_rng(10_000 + index)
    return rng.integers(1000, 2000, int(rng.integers(100, 400)), dtype=np.int32)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    args = parser.parse_args()
    paths = {}
    for name, fn in (("slimpajama", slimpajama_like), ("starcoder", starcoder_like)):
        paths[name] = os.path.join(args.workdir, name)
        optimize(
            fn,
            list(range(200)),
            paths[name],
            item_loader=TokensLoader(),
            chunk_size=BLOCK * 64,  # tokens per chunk
            num_workers=1,
            mode="overwrite",
        )

    loader = TokensLoader(block_size=BLOCK)
    train = CombinedStreamingDataset(
        datasets=[
            StreamingDataset(paths["slimpajama"], item_loader=loader, shuffle=True, drop_last=True),
            StreamingDataset(paths["starcoder"], item_loader=loader, shuffle=True, drop_last=True),
        ],
        weights=(0.7, 0.3),
        iterate_over_all=False,  # stop when the first dataset is exhausted
    )
    train_loader = StreamingDataLoader(train, batch_size=8, num_workers=2)

    counts = [0, 0]
    for batch in train_loader:
        assert batch.shape[1] == BLOCK
        code = batch.min(dim=1).values >= 1000  # starcoder blocks hold tokens >= 1000
        counts[1] += int(code.sum())
        counts[0] += int((~code).sum())
    share = counts[1] / sum(counts)
    print(
        f"{sum(counts)} blocks of {BLOCK} tokens: {counts[0]} slimpajama, {counts[1]} starcoder ({share:.0%})"
    )
    assert 0.2 < share < 0.4, share
