"""Which sample ids an epoch holds, chunk by chunk: geometry, subsampling and seeds.

Everything here is a pure function of integers and seeds (numpy only), so every rank and worker recomputes
the same answer alone. Nothing is O(samples): subsampling first fixes how many ids each chunk contributes
(exact total), and the ids inside one chunk are drawn only when a reader reaches that chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lit_streaming.errors import LitStreamingValueError
from lit_streaming.sampling.counts import spread

#: The first key of every generator names its purpose, so no two purposes ever share a stream (a key such as
#: (seed, epoch, purpose) could equal (seed, purpose', chunk) for some epoch and chunk).
SUBSAMPLE_COUNTS_STREAM = 1
SUBSAMPLE_STREAM = 2
CHUNK_ORDER_STREAM = 3
WINDOW_STREAM = 4
MIX_COUNTS_STREAM = 5
MIX_BLOCK_STREAM = 6


def check_keys(*keys: int) -> None:
    """Seeds, epochs and ranks are non-negative integers (checked even where nothing is drawn from them)."""
    for k in keys:
        if int(k) != k or k < 0:
            raise LitStreamingValueError(f"seed, epoch and rank must be non-negative integers, got {keys!r}")


def make_rng(*keys: int) -> np.random.Generator:
    """A generator seeded from a tuple of non-negative ints via SeedSequence.

    Seeding from the whole tuple (not ``seed + epoch``) keeps the streams of different
    (seed, epoch, rank, purpose) tuples independent, and is identical on every platform.
    """
    check_keys(*keys)
    return np.random.default_rng([int(k) for k in keys])


def chunk_offsets(chunk_sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    """``offsets[k]`` = first global id of chunk k; ``offsets[-1]`` = N (length C + 1, int64)."""
    sizes = np.asarray(chunk_sizes, dtype=np.int64).reshape(-1)
    if sizes.size and sizes.min() < 0:
        raise LitStreamingValueError(f"chunk_sizes must be non-negative, got min {int(sizes.min())}")
    offsets = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets


def chunk_of(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Chunk index of each global id (empty chunks are never returned)."""
    return np.searchsorted(offsets, np.asarray(ids, dtype=np.int64), side="right") - 1


def check_subsample(subsample: float) -> float:
    f = float(subsample)
    if not math.isfinite(f) or f <= 0:
        raise LitStreamingValueError(f"subsample must be a finite number > 0, got {subsample!r}")
    return f


def _split(f: float, n: int) -> tuple[int, int]:
    """(copies of every id, extra distinct ids) for subsample ``f`` of ``n`` samples."""
    whole = math.floor(f)
    return whole, int(round((f - whole) * n))


def subsample_count(num_samples: int, subsample: float) -> int:
    """Ids in an epoch of ``num_samples`` samples at ``subsample`` (cheap; no rng)."""
    whole, extra = _split(check_subsample(subsample), num_samples)
    return whole * num_samples + extra


def subsample_counts(chunk_sizes: Sequence[int] | np.ndarray, subsample: float, seed: int) -> np.ndarray:
    """Ids each chunk contributes to every epoch (int64, one per chunk; sums to :func:`subsample_count`).

    ``subsample`` f: 1.0 -> every id once; f < 1 -> round(f*N) distinct ids; f > 1 -> every id floor(f) times
    plus round(frac(f)*N) distinct extra ids. Which chunks the extra ids fall in is an exact multivariate
    hypergeometric draw, as if round(frac(f)*N) ids had been chosen from all N; it depends on ``seed`` only, so
    every epoch trains on the same subset (as in LitData).
    """
    sizes = np.asarray(chunk_sizes, dtype=np.int64).reshape(-1)
    n = int(sizes.sum())
    whole, extra = _split(check_subsample(subsample), n)
    if extra == 0:
        return sizes * whole
    chosen = spread(make_rng(SUBSAMPLE_COUNTS_STREAM, seed), np.array([extra, n - extra]), sizes)[:, 0]
    return sizes * whole + chosen


def chunk_ids(chunk: int, size: int, count: int, seed: int) -> np.ndarray:
    """The sorted local ids (0 <= id < size) chunk ``chunk`` contributes, ``count`` of them.

    Every id appears count // size times, plus count % size distinct extra ids chosen with a generator keyed
    by (seed, chunk), so any process draws the same ones without knowing the rest of the dataset.
    """
    if size == 0 or count == 0:
        return np.zeros(0, dtype=np.int64)
    whole, extra = divmod(int(count), int(size))
    base = np.arange(size, dtype=np.int64)
    if extra == 0:
        return np.repeat(base, whole) if whole != 1 else base
    chosen = np.sort(make_rng(SUBSAMPLE_STREAM, seed, chunk).choice(size, size=extra, replace=False))
    if whole == 0:
        return chosen.astype(np.int64)
    return np.sort(np.concatenate([np.repeat(base, whole), chosen]), kind="stable")


def chunk_order(num_chunks: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's order of chunks: a permutation from (seed, epoch) when shuffling, else 0..C-1."""
    if not shuffle:
        return np.arange(num_chunks, dtype=np.int64)
    return make_rng(CHUNK_ORDER_STREAM, seed, epoch).permutation(num_chunks).astype(np.int64)
