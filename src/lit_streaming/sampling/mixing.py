"""Which child a mix yields at each position, drawn in fixed blocks of positions with exact per-block counts.

The draw depends on (child lengths per rank, weights, seed, epoch, B), never on the rank: child lengths are
equal on every rank, so every rank yields the same number of samples and DDP cannot hang. Per-block counts
(O(blocks x children) integers) are drawn once per epoch; the order inside a block is a permutation keyed by
(seed, epoch, block), made only when a reader reaches the block. So position p's child, and its position in
that child's own plan, are found without drawing the whole epoch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from lit_streaming.errors import LitStreamingValueError
from lit_streaming.sampling.counts import spread
from lit_streaming.sampling.ids import MIX_BLOCK_STREAM, MIX_COUNTS_STREAM, make_rng
from lit_streaming.sampling.sequence import KeySequence

#: Units (samples, or batches with per_stream) per block: small enough to permute on demand.
BLOCK_UNITS = 1 << 16


def _check_args(
    child_lengths: Sequence[int], weights: Sequence[float], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray(child_lengths, dtype=np.int64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if lengths.size == 0:
        raise LitStreamingValueError("child_lengths must name at least one child")
    if lengths.min() < 0:
        raise LitStreamingValueError(f"child_lengths must be non-negative, got {list(lengths)}")
    if w.size != lengths.size:
        raise LitStreamingValueError(
            f"weights must have one entry per child: {w.size} weights, {lengths.size} children"
        )
    if not np.all(np.isfinite(w)) or w.min() < 0:
        raise LitStreamingValueError(f"weights must be finite and non-negative, got {list(w)}")
    if w.sum() <= 0:
        raise LitStreamingValueError("weights must not all be zero")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise LitStreamingValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return lengths, w


def exact_shares(available: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each positive-weight child's exact weight share of a mix that ends as the first child runs out."""
    positive = w > 0
    if np.any(positive & (available == 0)):
        return np.zeros_like(available)
    p = np.where(positive, w / w[positive].sum(), 0.0)
    ratio = np.where(positive, available / np.where(positive, p, 1.0), np.inf)
    limiting = int(np.argmin(ratio))
    counts = np.minimum(np.floor(p * ratio[limiting] + 1e-9).astype(np.int64), available)
    counts[limiting] = available[limiting]
    return np.where(positive, counts, 0)


def _weighted_order(rng: np.random.Generator, counts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """An order of a block with these ``counts`` drawn as the sequential mix draws it: each next unit by weight
    among the children with units left (iid draws by weight; a child's draws past its count are dropped)."""
    left, out = counts.astype(np.int64).copy(), []
    while left.sum() > 0:
        p = np.where(left > 0, w, 0.0)
        draws = rng.choice(left.size, size=int(left.sum()), p=p / p.sum())
        order = np.argsort(draws, kind="stable")
        first = np.searchsorted(draws[order], np.arange(left.size))
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size) - first[draws[order]]
        kept = draws[rank < left[draws]]
        out.append(kept)
        left -= np.bincount(kept, minlength=left.size)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _block_sizes(total: int) -> np.ndarray:
    sizes = np.full(total // BLOCK_UNITS, BLOCK_UNITS, dtype=np.int64)
    return np.append(sizes, total % BLOCK_UNITS) if total % BLOCK_UNITS else sizes


def _capped_block(rng: np.random.Generator, size: int, w: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Counts for one block of ``size`` draws among children with ``remaining`` > 0, none above its rest."""
    counts = np.zeros_like(remaining)
    left = size
    while left > 0:
        active = (remaining - counts > 0) & (w > 0)
        p = np.where(active, w, 0.0)
        draw = rng.multinomial(left, p / p.sum())
        counts += np.minimum(draw, remaining - counts)
        left = size - int(counts.sum())
    return counts


def _draw_all_blocks(rng: np.random.Generator, remaining: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-block counts of a mix that draws children by weight among those not yet exhausted, to the end.

    Blocks are drawn many at a time while no child is close to running out (one vectorised multinomial);
    the block in which a child runs out is capped and its excess redrawn among the others.
    """
    remaining = remaining.copy()
    rows = []
    while remaining.sum() > 0:
        left = int(remaining.sum())
        if left <= BLOCK_UNITS:
            rows.append(remaining[None, :].copy())
            break
        active = (remaining > 0) & (w > 0)
        p = np.where(active, w, 0.0) / np.where(active, w, 0.0).sum()
        with np.errstate(all="ignore"):
            blocks = np.min(np.where(active, remaining / (p * BLOCK_UNITS), np.inf))
        many = int(min(blocks * 0.9, left // BLOCK_UNITS))
        if many >= 2:
            draws = rng.multinomial(BLOCK_UNITS, p, size=many)
            fits = np.all(np.cumsum(draws, axis=0) <= remaining, axis=1)
            ok = int(np.argmin(fits)) if not fits.all() else many
            if ok > 0:
                rows.append(draws[:ok])
                remaining -= draws[:ok].sum(axis=0)
                continue
        block = _capped_block(rng, BLOCK_UNITS, w, remaining)
        rows.append(block[None, :])
        remaining -= block
    return np.concatenate(rows) if rows else np.zeros((0, remaining.size), dtype=np.int64)


class MixPlan:
    """One epoch's mix: per-block child counts, with the block permutations made on demand.

    ``iterate_over_all``: children are drawn by weight among those not yet exhausted until all are (length =
    the positive-weight children's lengths summed). Otherwise every child contributes exactly its weight share
    of a mix that ends as the first child runs out, in a random order per epoch: the length is the same every
    epoch (Lightning reads ``len`` once), and a positive-weight child that is empty gives an empty mix.
    ``per_stream``: one draw per batch of ``batch_size`` positions, all from that child; a child's tail of
    fewer than B samples is not used.
    """

    _CACHED_BLOCKS = 2

    def __init__(
        self,
        child_lengths: Sequence[int],
        weights: Sequence[float],
        seed: int,
        epoch: int,
        iterate_over_all: bool,
        batch_size: int,
        per_stream: bool,
    ) -> None:
        lengths, w = _check_args(child_lengths, weights, batch_size)
        self.unit = int(batch_size) if per_stream else 1
        available = np.where(w > 0, lengths // self.unit, 0)
        self.key = (int(seed), int(epoch))
        rng = make_rng(MIX_COUNTS_STREAM, *self.key)
        if iterate_over_all:
            counts = _draw_all_blocks(rng, available, w)
        else:
            shares = exact_shares(available, w)
            counts = spread(rng, shares, _block_sizes(int(shares.sum())))
        self.block_counts = counts
        self.weights = w
        self.block_first = np.zeros((counts.shape[0] + 1, counts.shape[1]), dtype=np.int64)
        np.cumsum(counts, axis=0, out=self.block_first[1:])
        self.block_start = np.zeros(counts.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts.sum(axis=1), out=self.block_start[1:])
        self.units = int(self.block_start[-1])
        # iterate_over_all: in a block where a child runs out, the draw is not exchangeable (the others are
        # renormalised after it), so that block's order is drawn sequentially by weight, not permuted uniformly.
        last = (counts > 0) & (self.block_first[1:] == self.block_first[-1])
        self.sequential_blocks = (
            last.any(axis=1) if iterate_over_all else np.zeros(counts.shape[0], dtype=bool)
        )
        self.length = self.units * self.unit
        self._blocks: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def num_children(self) -> int:
        return self.block_counts.shape[1]

    def materialised_units(self) -> int:
        """Units whose child is held in memory right now (the blocks in use): at most two blocks."""
        return sum(units.size for units in self._blocks.values())

    def child_totals(self) -> np.ndarray:
        """Positions each child fills in the whole epoch."""
        return self.block_first[-1] * self.unit

    def block(self, b: int) -> np.ndarray:
        """The child of each unit of block ``b``."""
        cached = self._blocks.get(b)
        if cached is None:
            counts = self.block_counts[b]
            dtype = np.int16 if counts.size < 2**15 else np.int32
            rng = make_rng(MIX_BLOCK_STREAM, *self.key, b)
            if self.sequential_blocks[b]:
                cached = _weighted_order(rng, counts, self.weights).astype(dtype)
            else:
                cached = rng.permutation(np.repeat(np.arange(counts.size, dtype=dtype), counts))
            self._blocks[b] = cached
            while len(self._blocks) > self._CACHED_BLOCKS:
                self._blocks.popitem(last=False)
        return cached

    def children(self, lo: int, hi: int) -> np.ndarray:
        """The child chosen at each position in [lo, hi)."""
        u0, u1 = lo // self.unit, -(-hi // self.unit)
        out = []
        b = int(np.searchsorted(self.block_start, u0, side="right")) - 1
        u = u0
        while u < u1:
            bs, be = int(self.block_start[b]), int(self.block_start[b + 1])
            take = min(u1, be)
            out.append(self.block(b)[u - bs : take - bs])
            u, b = take, b + 1
        units = np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
        if self.unit == 1:
            return units
        return np.repeat(units, self.unit)[lo - u0 * self.unit : hi - u0 * self.unit]

    def child_position(self, p: int) -> np.ndarray:
        """For each child, how many positions before ``p`` chose it (its next position in its own plan)."""
        if not 0 <= p <= self.length:
            raise IndexError(f"position {p} outside a mix of length {self.length}")
        u, within = divmod(p, self.unit)
        b = int(np.searchsorted(self.block_start, u, side="right")) - 1
        if b >= self.block_counts.shape[0]:
            return self.block_first[-1] * self.unit
        units = self.block(b)
        head = units[: u - int(self.block_start[b])]
        out = (self.block_first[b] + np.bincount(head, minlength=self.num_children)) * self.unit
        if within:
            out[int(units[u - int(self.block_start[b])])] += within
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_blocks"] = OrderedDict()
        return state


class MixSequence(KeySequence):
    """A rank's mix: position p holds child c's next key, offset into the mix's key space."""

    def __init__(
        self,
        plan: MixPlan,
        children: Sequence[KeySequence],
        key_offsets: Sequence[int],
        leaf_offsets: Sequence[int],
    ) -> None:
        self.plan = plan
        self.children = list(children)
        self.key_offsets = [int(k) for k in key_offsets]
        self.leaf_offsets = [int(k) for k in leaf_offsets]
        self.length = plan.length
        totals = plan.child_totals()
        for c, child in enumerate(self.children):
            if child.length < totals[c]:
                raise LitStreamingValueError(
                    f"child {c} has {child.length} samples, the mix takes {int(totals[c])}"
                )

    def child_ranges(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Each child's own position range that positions [lo, hi) of the mix read."""
        a, b = self.plan.child_position(lo), self.plan.child_position(hi)
        return [(int(x), int(y)) for x, y in zip(a.tolist(), b.tolist())]

    def keys(self, lo: int, hi: int) -> np.ndarray:
        self._check(lo, hi)
        which = self.plan.children(lo, hi)
        out = np.empty(hi - lo, dtype=np.int64)
        for c, (a, b) in enumerate(self.child_ranges(lo, hi)):
            if b > a:
                out[which == c] = self.children[c].keys(a, b) + self.key_offsets[c]
        return out

    def chunk_runs(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        self._check(lo, hi)
        return [
            (leaf + self.leaf_offsets[c], chunks)
            for c, (a, b) in enumerate(self.child_ranges(lo, hi))
            if b > a
            for leaf, chunks in self.children[c].chunk_runs(a, b)
        ]


def mix_length(
    child_lengths: Sequence[int],
    weights: Sequence[float],
    iterate_over_all: bool,
    batch_size: int,
    per_stream: bool,
) -> int:
    """``MixPlan(...).length`` without drawing anything (it does not depend on seed or epoch)."""
    lengths, w = _check_args(child_lengths, weights, batch_size)
    unit = int(batch_size) if per_stream else 1
    available = np.where(w > 0, lengths // unit, 0)
    units = int(available.sum()) if iterate_over_all else int(exact_shares(available, w).sum())
    return units * unit
