"""Sample ids of one epoch: chunk geometry, subsampling and the epoch's chunk order.

Everything here is a pure function of integers and seeds (numpy only), so every rank and
worker can recompute the same plan independently, at iteration time, with no communication.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def make_rng(*keys: int) -> np.random.Generator:
    """A generator seeded from a tuple of non-negative ints via SeedSequence.

    Seeding from the whole tuple (not ``seed + epoch``) keeps the streams of different
    (seed, epoch, rank, purpose) tuples independent, and is identical on every platform.
    """
    for k in keys:
        if int(k) != k or k < 0:
            raise ValueError(f"seed, epoch and rank must be non-negative integers, got {keys!r}")
    return np.random.default_rng([int(k) for k in keys])


def chunk_offsets(chunk_sizes: Sequence[int]) -> np.ndarray:
    """``offsets[k]`` = first global id of chunk k; ``offsets[-1]`` = N (length C + 1, int64)."""
    sizes = np.asarray(chunk_sizes, dtype=np.int64).reshape(-1)
    if sizes.size and sizes.min() < 0:
        raise ValueError(f"chunk_sizes must be non-negative, got min {int(sizes.min())}")
    offsets = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets


def chunk_of(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Chunk index of each global id (empty chunks are never returned)."""
    return np.searchsorted(offsets, np.asarray(ids, dtype=np.int64), side="right") - 1


def _check_subsample(subsample: float) -> float:
    f = float(subsample)
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"subsample must be a finite number > 0, got {subsample!r}")
    return f


def subsample_count(num_samples: int, subsample: float) -> int:
    """How many ids :func:`subsample_ids` returns for N samples (cheap; no rng)."""
    f = _check_subsample(subsample)
    whole = math.floor(f)
    return whole * num_samples + int(round((f - whole) * num_samples))


def subsample_ids(chunk_sizes: Sequence[int], subsample: float, seed: int) -> np.ndarray:
    """The epoch-independent, sorted multiset of global ids the dataset yields.

    ``subsample`` f: 1.0 -> every id once; f < 1 -> round(f*N) distinct ids; f > 1 -> every id
    floor(f) times plus round(frac(f)*N) distinct extra ids. The choice depends on ``seed`` only
    (not the epoch), so the same subset is trained on every epoch, as in LitData.
    """
    f = _check_subsample(subsample)
    n = int(chunk_offsets(chunk_sizes)[-1])
    whole = math.floor(f)
    extra = int(round((f - whole) * n))
    base = np.arange(n, dtype=np.int64)
    if extra == 0:
        return np.repeat(base, whole) if whole != 1 else base
    chosen = make_rng(seed).choice(n, size=extra, replace=False).astype(np.int64)
    if whole == 0:
        return np.sort(chosen)
    return np.sort(np.concatenate([np.repeat(base, whole), chosen]), kind="stable")


def epoch_order(
    chunk_sizes: Sequence[int], ids: np.ndarray, seed: int, epoch: int, shuffle: bool
) -> np.ndarray:
    """The epoch's global order of ``ids``: chunk by chunk, chunks permuted when shuffling.

    Keeping each chunk's samples together means a reader opens each chunk once per epoch;
    the per-rank window shuffle then mixes samples across a bounded number of chunks.
    With ``shuffle=False`` the ids are returned unchanged.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if not shuffle:
        return ids
    offsets = chunk_offsets(chunk_sizes)
    perm = make_rng(seed, epoch).permutation(offsets.size - 1)
    if ids.size > 1 and not bool(np.all(ids[1:] >= ids[:-1])):
        position = np.empty_like(perm)
        position[perm] = np.arange(perm.size)
        return ids[np.argsort(position[chunk_of(ids, offsets)], kind="stable")]
    # Sorted ids: each chunk is one contiguous segment, so gather segments in O(N), no sort.
    bounds = np.searchsorted(ids, offsets, side="left")
    starts, lengths = bounds[:-1][perm], np.diff(bounds)[perm]
    out_starts = np.cumsum(lengths) - lengths
    gather = np.repeat(starts - out_starts, lengths) + np.arange(ids.size, dtype=np.int64)
    return ids[gather]
