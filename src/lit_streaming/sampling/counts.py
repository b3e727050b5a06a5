"""Exact random splits of counts over blocks, in O(blocks x kinds) and never O(items).

Both lazy plans need the same primitive: "these totals (per kind) are spread uniformly at random over these
blocks of given sizes; how many of each kind land in each block?" Subsampling asks it with kinds
(chosen, not chosen) and blocks = chunks; mixing asks it with kinds = child datasets and blocks = fixed runs of
positions. Answering it exactly (per-block counts that sum to the totals) lets a reader materialise one block at
a time and still produce a sequence distributed like one uniform shuffle of the whole epoch.
"""

from __future__ import annotations

import numpy as np

from lit_streaming.errors import LitStreamingValueError

#: numpy's hypergeometric sampler needs ngood and nbad below this; above it a clipped binomial stands in
#: (same totals, a variance off by the finite-population factor, which is ~1 at those sizes).
_HYPERGEOMETRIC_LIMIT = 10**9


def _hypergeometric(
    rng: np.random.Generator, good: np.ndarray, bad: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """Vectorised hypergeometric draws that accept any int64 sizes."""
    out = np.zeros(good.shape, dtype=np.int64)
    small = (good < _HYPERGEOMETRIC_LIMIT) & (bad < _HYPERGEOMETRIC_LIMIT) & (draws > 0)
    if small.any():
        out[small] = rng.hypergeometric(good[small], bad[small], draws[small])
    big = ~small & (draws > 0)
    if big.any():
        g, b, d = good[big], bad[big], draws[big]
        x = rng.binomial(d, g / (g + b))
        out[big] = np.clip(x, np.maximum(0, d - b), np.minimum(d, g))
    return out


def split_multiset(rng: np.random.Generator, totals: np.ndarray, take: np.ndarray) -> np.ndarray:
    """Multivariate hypergeometric draws, vectorised over rows.

    ``totals`` is (rows, kinds) of how many items of each kind a row holds; ``take`` (rows,) how many items
    are drawn from each row without replacement. Returns the drawn counts per kind, (rows, kinds).
    """
    totals = np.asarray(totals, dtype=np.int64)
    need = np.asarray(take, dtype=np.int64).copy()
    out = np.zeros_like(totals)
    rest = totals.sum(axis=1)
    for k in range(totals.shape[1] - 1):
        rest = rest - totals[:, k]
        out[:, k] = _hypergeometric(rng, totals[:, k], rest, need)
        need -= out[:, k]
    out[:, -1] = need
    return out


def spread(rng: np.random.Generator, totals: np.ndarray, block_sizes: np.ndarray) -> np.ndarray:
    """Spread ``totals`` (kinds,) over blocks of ``block_sizes`` (sum(block_sizes) == sum(totals)).

    Returns (blocks, kinds) counts: row b sums to block_sizes[b], column k to totals[k], and the split is
    distributed as if every item had been placed by one uniform random permutation. Works top-down over a
    balanced binary tree of blocks, one vectorised draw per tree level: O(blocks x kinds) time and memory.
    """
    totals = np.asarray(totals, dtype=np.int64).reshape(1, -1)
    sizes = np.asarray(block_sizes, dtype=np.int64).reshape(-1)
    if int(sizes.sum()) != int(totals.sum()):
        raise LitStreamingValueError(
            f"block sizes sum to {int(sizes.sum())} but the totals to {int(totals.sum())}"
        )
    if sizes.size == 0:
        return np.zeros((0, totals.shape[1]), dtype=np.int64)
    bounds = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    # Each node is a range [lo, hi) of blocks with its counts per kind; split nodes until all are single blocks.
    lo, hi, counts = np.array([0]), np.array([sizes.size]), totals
    while True:
        wide = hi - lo > 1
        if not wide.any():
            break
        mid = (lo + hi) // 2
        left_size = bounds[mid] - bounds[lo]
        left = np.zeros_like(counts)
        left[wide] = split_multiset(rng, counts[wide], left_size[wide])
        right = counts - left
        lo = np.concatenate([lo[wide], mid[wide], lo[~wide]])
        hi = np.concatenate([mid[wide], hi[wide], hi[~wide]])
        counts = np.concatenate([left[wide], right[wide], counts[~wide]])
    out = np.zeros((sizes.size, totals.shape[1]), dtype=np.int64)
    out[lo] = counts
    return out
