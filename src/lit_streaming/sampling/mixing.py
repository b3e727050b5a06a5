"""Which child a CombinedStreamingDataset yields at each position of its rank sequence.

The choices depend on (child lengths per rank, weights, seed, epoch, B), never on the rank:
child lengths are equal on every rank, so every rank yields the same number of samples and
DDP cannot hang. Sampling is done in numpy blocks with one Python iteration per exhaustion
event (plus a few for block sizing), not per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lit_streaming.sampling.ids import make_rng

#: Extra key in the mixing rng seed, so its stream is independent of the chunk-order stream.
_MIX_STREAM = 7


def _check_args(
    child_lengths: Sequence[int], weights: Sequence[float], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray(child_lengths, dtype=np.int64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if lengths.size == 0:
        raise ValueError("child_lengths must name at least one child")
    if lengths.min() < 0:
        raise ValueError(f"child_lengths must be non-negative, got {list(lengths)}")
    if w.size != lengths.size:
        raise ValueError(f"weights must have one entry per child: {w.size} weights, {lengths.size} children")
    if not np.all(np.isfinite(w)) or w.min() < 0:
        raise ValueError(f"weights must be finite and non-negative, got {list(w)}")
    if w.sum() <= 0:
        raise ValueError("weights must not all be zero")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return lengths, w


def _draw_until_exhaustion(rng: np.random.Generator, p: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Draw children (local indices) with probabilities ``p`` until one of them is drawn for the
    ``need[i]``-th time; that draw is the last one returned."""
    k = p.size
    if k == 1:
        return np.zeros(int(need[0]), dtype=np.int16)
    cum = np.cumsum(p)
    cum[-1] = 1.0
    need = need.copy()
    out = []
    while True:
        # Expected draws to the first exhaustion, with slack; a short block just loops, and the
        # pigeonhole bound need.sum() guarantees this block exhausts someone.
        block = int(min(need.sum(), math.ceil(np.min(need / p) * 1.05) + 64))
        local = np.minimum(np.searchsorted(cum, rng.random(block), side="right"), k - 1)
        local = local.astype(np.int16 if k < 2**15 else np.int32)
        counts = np.bincount(local, minlength=k)
        hit = np.flatnonzero(counts >= need)
        if hit.size == 0:
            out.append(local)
            need -= counts
            continue
        order = np.argsort(local, kind="stable")
        starts = np.cumsum(counts) - counts
        last = int(order[starts[hit] + need[hit] - 1].min())
        out.append(local[: last + 1])
        return np.concatenate(out)


def _shares(available: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each positive-weight child's exact weight share of a mix that ends as the first child runs out."""
    positive = w > 0
    p = np.where(positive, w / w[positive].sum(), 0.0)
    ratio = np.where(positive, available / np.where(positive, p, 1.0), np.inf)
    limiting = int(np.argmin(ratio))
    counts = np.minimum(np.floor(p * ratio[limiting] + 1e-9).astype(np.int64), available)
    counts[limiting] = available[limiting]
    return counts


def mix_choices(
    child_lengths: Sequence[int],
    weights: Sequence[float],
    seed: int,
    epoch: int,
    iterate_over_all: bool,
    batch_size: int,
    per_stream: bool,
) -> np.ndarray:
    """The child index (int16; int32 beyond 32767 children) at each position of the mix.

    Each position draws a child with probability proportional to ``weights`` among children not
    yet exhausted; zero-weight children are never drawn and do not count. ``iterate_over_all``:
    an exhausted child is dropped and the rest renormalised until all are exhausted (length =
    sum of the positive-weight children's lengths). Otherwise every child contributes exactly its
    weight share of a mix that ends as the first child runs out, in a random order drawn per
    epoch: the length is the same every epoch (Lightning reads ``len`` once), and a
    positive-weight child that is empty from the start gives an empty mix. ``per_stream``: one draw per batch of
    ``batch_size`` positions, all from that child; a child with fewer than B samples left is
    exhausted, so its tail (< B samples) is not yielded.
    """
    lengths, w = _check_args(child_lengths, weights, batch_size)
    unit = int(batch_size) if per_stream else 1
    remaining = np.where(w > 0, lengths // unit, 0)
    dtype = np.int16 if lengths.size < 2**15 else np.int32
    if not iterate_over_all and np.any((w > 0) & (remaining == 0)):
        return np.zeros(0, dtype=dtype)
    rng = make_rng(seed, epoch, _MIX_STREAM)
    if not iterate_over_all:
        choices = rng.permutation(np.repeat(np.arange(lengths.size, dtype=dtype), _shares(remaining, w)))
        return np.repeat(choices, unit) if unit > 1 else choices
    pieces = []
    active = np.flatnonzero(remaining > 0)
    while active.size:
        local = _draw_until_exhaustion(rng, w[active] / w[active].sum(), remaining[active])
        pieces.append(active[local].astype(dtype))
        remaining[active] -= np.bincount(local, minlength=active.size)
        if not iterate_over_all:
            break
        active = np.flatnonzero(remaining > 0)
    choices = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    return np.repeat(choices, unit) if unit > 1 else choices


def mix_positions(choices: np.ndarray) -> np.ndarray:
    """For each position, the index into its child's rank sequence (how many earlier positions
    chose the same child), so a reader can fetch it directly and resume at any position."""
    c = np.asarray(choices)
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0:
        raise ValueError("choices must be non-negative child indices")
    counts = np.bincount(c)
    starts = np.cumsum(counts) - counts
    order = np.argsort(c, kind="stable")
    pos = np.empty(c.size, dtype=np.int64)
    pos[order] = np.arange(c.size, dtype=np.int64) - np.repeat(starts, counts)
    return pos
