"""Per-rank sample plan: rank partition, window shuffle and elastic resume chains.

Contract (DESIGN.md sections 5 and 6): every rank gets the same length (no DDP hang); the
union over ranks is the epoch exactly once, minus fewer than W*B samples with
``drop_last=True`` (nothing duplicated), or plus fewer than W repeated pads with
``drop_last=False``; the order depends only on (seed, epoch, dataset, W, B) and the rank, so a
rank can compute it at iteration time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lit_streaming.sampling.ids import (
    chunk_of,
    chunk_offsets,
    epoch_order,
    make_rng,
    subsample_count,
    subsample_ids,
)

#: Default number of consecutive chunk runs whose samples are shuffled together on a rank.
#: Larger windows mix more chunks per batch but keep more chunks open per reader.
DEFAULT_SHUFFLE_WINDOW = 16


def _check_positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def rank_length(n: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    """Samples each rank yields from a sequence of ``n``: equal on every rank.

    ``drop_last=True``: (n // W) // B * B, so every rank yields only full batches and fewer
    than W*B samples are dropped in total. ``drop_last=False``: ceil(n / W); the last ranks are
    padded by wrapping around, fewer than W repeats in total.
    """
    world_size = _check_positive("world_size", world_size)
    batch_size = _check_positive("batch_size", batch_size)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if drop_last:
        return (n // world_size) // batch_size * batch_size
    return -(-n // world_size)


def partition(seq: np.ndarray, world_size: int, rank: int, batch_size: int, drop_last: bool) -> np.ndarray:
    """Rank ``rank``'s contiguous share of ``seq`` (may be a view of it).

    Contiguous shares keep each rank on few chunks at a time. ``drop_last=False``: ``seq``
    wrapped around to length W*m, rank r gets [r*m, (r+1)*m). ``drop_last=True``: rank r gets
    the first m of its block [r*(n//W), (r+1)*(n//W)).
    """
    seq = np.asarray(seq)
    n = seq.size
    m = rank_length(n, world_size, batch_size, drop_last)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if drop_last:
        start = rank * (n // world_size)
        return seq[start : start + m]
    if (rank + 1) * m <= n:
        return seq[rank * m : (rank + 1) * m]
    return seq[np.arange(rank * m, (rank + 1) * m, dtype=np.int64) % n]


def window_shuffle(
    rank_seq: np.ndarray,
    chunk_of_ids: np.ndarray,
    window_chunks: int,
    seed: int,
    epoch: int,
    rank: int,
) -> np.ndarray:
    """Shuffle samples within windows of ``window_chunks`` consecutive chunk runs.

    ``chunk_of_ids`` is the chunk index of each entry of ``rank_seq`` (aligned with it, e.g.
    ``chunk_of(rank_seq, offsets)``). A run is a maximal stretch of entries from one chunk.
    Mixing a window gives batches drawn from ~``window_chunks`` chunks while a sequential
    reader still only needs the window's chunks open at once.
    """
    rank_seq = np.asarray(rank_seq)
    chunks = np.asarray(chunk_of_ids)
    if chunks.shape != rank_seq.shape:
        raise ValueError(
            f"chunk_of_ids must be aligned with rank_seq, got lengths {chunks.size} and {rank_seq.size}"
        )
    window_chunks = _check_positive("window_chunks", window_chunks)
    if rank_seq.size < 2:
        return rank_seq.copy()
    run_id = np.empty(rank_seq.size, dtype=np.int64)
    run_id[0] = 0
    np.cumsum(chunks[1:] != chunks[:-1], out=run_id[1:])
    window = run_id // window_chunks
    # Window id in the high bits (samples stay in their window), random bits below it.
    random_bits = 62 - int(window[-1]).bit_length()
    keys = make_rng(seed, epoch, rank, 1).integers(0, 2**random_bits, size=rank_seq.size, dtype=np.int64)
    keys |= window << random_bits
    # The fast unstable sort is platform-independent only when keys are distinct; on a tie,
    # fall back to the stable sort so the order is the same everywhere.
    order = np.argsort(keys)
    sorted_keys = keys[order]
    if np.any(sorted_keys[1:] == sorted_keys[:-1]):
        order = np.argsort(keys, kind="stable")
    return rank_seq[order]


def _check_chain(resume_chain: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    chain = []
    for seg in resume_chain:
        if len(seg) != 2:
            raise ValueError(f"resume_chain entries must be (world_size, consumed), got {seg!r}")
        w, c = int(seg[0]), int(seg[1])
        if w < 1 or c < 0:
            raise ValueError(f"resume_chain entry {seg!r} needs world_size >= 1 and consumed >= 0")
        chain.append((w, c))
    return chain


def _check_consumed(consumed: int, m: int, seg: tuple[int, int]) -> None:
    if consumed > m:
        raise ValueError(f"resume_chain entry {seg!r}: consumed exceeds the rank length {m}")


def rank_sequence(
    chunk_sizes: Sequence[int],
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
    drop_last: bool,
    world_size: int,
    rank: int,
    batch_size: int,
    subsample: float = 1.0,
    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW,
    resume_chain: Sequence[tuple[int, int]] = (),
) -> np.ndarray:
    """The ordered global sample ids rank ``rank`` yields this epoch (int64).

    ``resume_chain`` = ((W0, c0), (W1, c1), ...) describes an elastic resume: with world size
    W0 every rank consumed c0 samples of its sequence; the rest, concatenated in rank order, is
    re-partitioned (same rule, no further shuffle) for W1, of which c1 per rank were consumed,
    and so on; the last remainder is partitioned for ``world_size``. Each re-partition may add
    fewer than W_i pad repeats (``drop_last=False``) or drop fewer than W_i*B samples
    (``drop_last=True``). The returned sequence starts at the first unconsumed sample.
    """
    chain = _check_chain(resume_chain)
    make_rng(seed, epoch)  # validates seed and epoch even when nothing below draws from them
    ids = subsample_ids(chunk_sizes, subsample, seed)
    order = epoch_order(chunk_sizes, ids, seed, epoch, shuffle)
    offsets = chunk_offsets(chunk_sizes) if shuffle else None

    def first_segment(w: int, r: int) -> np.ndarray:
        seq = partition(order, w, r, batch_size, drop_last)
        if shuffle:
            seq = window_shuffle(seq, chunk_of(seq, offsets), shuffle_window, seed, epoch, r)
        return seq

    if not chain:
        # A copy, so the rank's share does not keep the whole epoch's array alive.
        return np.array(first_segment(world_size, rank), dtype=np.int64)
    w0, c0 = chain[0]
    parts = [first_segment(w0, r) for r in range(w0)]
    _check_consumed(c0, parts[0].size, chain[0])
    rest = np.concatenate([p[c0:] for p in parts])
    for w, c in chain[1:]:
        m = rank_length(rest.size, w, batch_size, drop_last)
        _check_consumed(c, m, (w, c))
        rest = np.concatenate([partition(rest, w, r, batch_size, drop_last)[c:] for r in range(w)])
    return np.array(partition(rest, world_size, rank, batch_size, drop_last), dtype=np.int64)


def rank_sequence_length(
    chunk_sizes: Sequence[int],
    *,
    drop_last: bool,
    world_size: int,
    batch_size: int,
    subsample: float = 1.0,
    resume_chain: Sequence[tuple[int, int]] = (),
    seed: int | None = None,
    epoch: int | None = None,
    shuffle: bool | None = None,
    rank: int | None = None,
    shuffle_window: int | None = None,
) -> int:
    """``len(rank_sequence(...))`` in O(number of chunks), the same on every rank.

    ``seed``, ``epoch``, ``shuffle``, ``rank`` and ``shuffle_window`` do not change the length;
    they are accepted so callers can pass the same keywords as to :func:`rank_sequence`.
    """
    n = subsample_count(int(chunk_offsets(chunk_sizes)[-1]), subsample)
    for w, c in _check_chain(resume_chain):
        m = rank_length(n, w, batch_size, drop_last)
        _check_consumed(c, m, (w, c))
        n = w * (m - c)
    return rank_length(n, world_size, batch_size, drop_last)


def num_batches(m: int, start: int, batch_size: int) -> int:
    """Batches left in a rank sequence of length ``m`` from ``start``: ceil((m - start) / B)."""
    batch_size = _check_positive("batch_size", batch_size)
    if not 0 <= start <= m:
        raise ValueError(f"start must be in [0, {m}], got {start}")
    return -(-(m - start) // batch_size)


def worker_ids(
    rank_seq: np.ndarray, start: int, batch_size: int, num_workers: int, worker_id: int
) -> np.ndarray:
    """The samples worker ``worker_id`` yields: batches j, j+w, j+2w, ... of ``rank_seq[start:]``.

    torch's DataLoader takes batches from its workers round-robin, so the main process sees
    ``rank_seq[start:]`` in order for any number of workers (``num_workers=0`` counts as 1).
    Only the last batch of the rank may be partial.
    """
    rank_seq = np.asarray(rank_seq)
    batch_size = _check_positive("batch_size", batch_size)
    w = max(int(num_workers), 1)
    if not 0 <= worker_id < w:
        raise ValueError(f"worker_id must be in [0, {w}), got {worker_id}")
    rest = rank_seq[start:]
    nb = num_batches(rank_seq.size, start, batch_size)
    batches = np.arange(worker_id, nb, w, dtype=np.int64)
    idx = (batches[:, None] * batch_size + np.arange(batch_size, dtype=np.int64)).reshape(-1)
    return rest[idx[idx < rest.size]]
