"""Per-rank epoch plans: rank partition, window shuffle, elastic resume chains and the worker split.

Contract (DESIGN.md sections 5 and 6): every rank gets the same length (no DDP hang); the union over ranks
is the epoch exactly once, minus fewer than W*B samples with ``drop_last=True`` (nothing duplicated), or plus
fewer than W repeated pads with ``drop_last=False``; the order depends only on (seed, epoch, dataset, W, B)
and the rank, so a rank computes it alone at iteration time. Every plan here is a lazy
:class:`~lit_streaming.sampling.sequence.KeySequence`: O(chunks) to build, O(window) to read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from lit_streaming.errors import LitStreamingValueError
from lit_streaming.sampling.ids import check_keys, chunk_order, subsample_counts
from lit_streaming.sampling.sequence import ChunkGeometry, Concat, Cycle, KeySequence, Slice, WindowedShare

#: Default number of consecutive chunk pieces whose samples are shuffled together on a rank.
#: Larger windows mix more chunks per batch but keep more chunks open per reader.
DEFAULT_SHUFFLE_WINDOW = 16

#: A stream's own plan for (world_size, rank): what an elastic resume chain re-partitions.
NativePlan = Callable[[int, int], KeySequence]


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise LitStreamingValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def rank_length(n: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    """Samples each rank yields from a sequence of ``n``: equal on every rank.

    ``drop_last=True``: (n // W) // B * B, so every rank yields only full batches and fewer than W*B samples
    are dropped in total. ``drop_last=False``: ceil(n / W); the last ranks are padded by wrapping around,
    fewer than W repeats in total.
    """
    world_size = check_positive("world_size", world_size)
    batch_size = check_positive("batch_size", batch_size)
    if n < 0:
        raise LitStreamingValueError(f"n must be >= 0, got {n}")
    if drop_last:
        return (n // world_size) // batch_size * batch_size
    return -(-n // world_size)


def rank_intervals(
    n: int, world_size: int, rank: int, batch_size: int, drop_last: bool
) -> list[tuple[int, int]]:
    """Rank ``rank``'s contiguous share of positions [0, n), as intervals (wrap-around pads included).

    Contiguous shares keep each rank on few chunks at a time. ``drop_last=False``: the sequence wrapped
    around to length W*m, rank r gets [r*m, (r+1)*m). ``drop_last=True``: rank r gets the first m of its
    block [r*(n//W), (r+1)*(n//W)).
    """
    m = rank_length(n, world_size, batch_size, drop_last)
    if not 0 <= rank < world_size:
        raise LitStreamingValueError(f"rank must be in [0, {world_size}), got {rank}")
    if drop_last:
        start = rank * (n // world_size)
        return [(start, start + m)]
    lo, hi, out = rank * m, (rank + 1) * m, []
    while lo < hi:
        offset = lo % n
        take = min(hi - lo, n - offset)
        out.append((offset, offset + take))
        lo += take
    return out


def partition(seq: KeySequence, world_size: int, rank: int, batch_size: int, drop_last: bool) -> KeySequence:
    """Rank ``rank``'s share of ``seq`` by the rule of :func:`rank_intervals` (no copy)."""
    n = seq.length
    m = rank_length(n, world_size, batch_size, drop_last)
    (a, b), *more = rank_intervals(n, world_size, rank, batch_size, drop_last) or [(0, 0)]
    if not more:
        return Slice(seq, a, b - a)
    return Slice(Cycle(seq, world_size * m), rank * m, m)


def dataset_geometry(chunk_sizes: Sequence[int] | np.ndarray, subsample: float, seed: int) -> ChunkGeometry:
    """Items and epoch ids per chunk (the subsample draw is made here, once per dataset)."""
    check_keys(seed)
    return ChunkGeometry(chunk_sizes, subsample_counts(chunk_sizes, subsample, seed), seed)


def dataset_plan(
    geometry: ChunkGeometry,
    *,
    epoch: int,
    shuffle: bool,
    drop_last: bool,
    world_size: int,
    rank: int,
    batch_size: int,
    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW,
) -> WindowedShare:
    """Rank ``rank``'s epoch of a dataset: its share of the chunk-ordered epoch, shuffled per window.

    Chunks come in a per-epoch order (permuted when shuffling) so a reader opens each chunk once per epoch,
    and the window shuffle mixes samples across ``shuffle_window`` chunks.
    """
    check_keys(geometry.seed, epoch)
    check_positive("shuffle_window", shuffle_window)
    order = chunk_order(geometry.sizes.size, geometry.seed, epoch, shuffle)
    intervals = rank_intervals(geometry.total, world_size, rank, batch_size, drop_last)
    return WindowedShare(
        geometry,
        order,
        intervals,
        window_chunks=shuffle_window,
        shuffle=shuffle,
        key=(geometry.seed, epoch, world_size, rank),
    )


def check_chain(resume_chain: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    chain = []
    for seg in resume_chain:
        if len(seg) != 2:
            raise LitStreamingValueError(f"resume_chain entries must be (world_size, consumed), got {seg!r}")
        if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in seg):
            raise LitStreamingValueError(f"resume_chain entry {seg!r} must hold integers")
        w, c = int(seg[0]), int(seg[1])
        if w < 1 or c < 0:
            raise LitStreamingValueError(
                f"resume_chain entry {seg!r} needs world_size >= 1 and consumed >= 0"
            )
        chain.append((w, c))
    return chain


def _check_consumed(consumed: int, m: int, seg: tuple[int, int]) -> None:
    if consumed > m:
        raise LitStreamingValueError(f"resume_chain entry {seg!r}: consumed exceeds the rank length {m}")


def resumed_plan(
    native: NativePlan,
    *,
    world_size: int,
    rank: int,
    batch_size: int,
    drop_last: bool,
    resume_chain: Sequence[Sequence[int]] = (),
) -> KeySequence:
    """Rank ``rank``'s plan after an elastic resume (any stream kind: ``native`` gives its own plans).

    ``resume_chain`` = ((W0, c0), (W1, c1), ...): with world size W0 every rank consumed c0 samples of its
    plan; the rest, concatenated in rank order, is re-partitioned (same rule, no further shuffle) for W1, of
    which c1 per rank were consumed, and so on; the last remainder is partitioned for ``world_size``. Each
    re-partition may add fewer than W_i pad repeats (``drop_last=False``) or drop fewer than W_i*B samples
    (``drop_last=True``). Only lengths are computed here; keys are read lazily from the native plans.
    """
    chain = check_chain(resume_chain)
    if not chain:
        return native(world_size, rank)
    w0, c0 = chain[0]
    parts = [native(w0, r) for r in range(w0)]
    _check_consumed(c0, parts[0].length, chain[0])
    rest: KeySequence = Concat([Slice(p, c0, p.length - c0) for p in parts])
    for w, c in chain[1:]:
        m = rank_length(rest.length, w, batch_size, drop_last)
        _check_consumed(c, m, (w, c))
        rest = Concat(
            [
                Slice(s, c, s.length - c)
                for s in (partition(rest, w, r, batch_size, drop_last) for r in range(w))
            ]
        )
    return partition(rest, world_size, rank, batch_size, drop_last)


def resumed_length(
    native_length: Callable[[int], int],
    *,
    world_size: int,
    batch_size: int,
    drop_last: bool,
    resume_chain: Sequence[Sequence[int]] = (),
) -> int:
    """``resumed_plan(...).length`` from lengths alone (``native_length(W)``: a rank's native plan length)."""
    chain = check_chain(resume_chain)
    if not chain:
        return native_length(world_size)
    w0, c0 = chain[0]
    m = native_length(w0)
    _check_consumed(c0, m, chain[0])
    n = w0 * (m - c0)
    for w, c in chain[1:]:
        m = rank_length(n, w, batch_size, drop_last)
        _check_consumed(c, m, (w, c))
        n = w * (m - c)
    return rank_length(n, world_size, batch_size, drop_last)


def num_batches(m: int, start: int, batch_size: int) -> int:
    """Batches left in a rank sequence of length ``m`` from ``start``: ceil((m - start) / B)."""
    batch_size = check_positive("batch_size", batch_size)
    if not 0 <= start <= m:
        raise LitStreamingValueError(f"start must be in [0, {m}], got {start}")
    return -(-(m - start) // batch_size)


def worker_batches(
    m: int, start: int, batch_size: int, num_workers: int, worker_id: int
) -> Iterator[tuple[int, int]]:
    """Position ranges of the batches worker ``worker_id`` yields: batches j, j+w, j+2w, ... from ``start``.

    torch's DataLoader takes batches from its workers round-robin, so the main process sees positions
    ``start..m`` in order for any number of workers (``num_workers=0`` counts as 1). Only the last batch of
    the rank may be partial.
    """
    batch_size = check_positive("batch_size", batch_size)
    w = max(int(num_workers), 1)
    if not 0 <= worker_id < w:
        raise LitStreamingValueError(f"worker_id must be in [0, {w}), got {worker_id}")
    for b in range(worker_id, num_batches(m, start, batch_size), w):
        lo = start + b * batch_size
        yield lo, min(lo + batch_size, m)
