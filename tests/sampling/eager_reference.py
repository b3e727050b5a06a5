"""A straightforward eager reference of the sampling plans, kept in the tests (O(samples), plain numpy).

It is written from the contract (DESIGN.md sections 5 and 6, issue 10) and does not call the lazy classes of
``lit_streaming.sampling``: the epoch's ids are materialised chunk by chunk in the epoch's chunk order, each
rank takes its positions of that array, its pieces (the part of one chunk inside one contiguous run of
positions) are grouped ``shuffle_window`` at a time, and each window is permuted with its own generator. The
property tests check that the lazy plan yields exactly these keys. Only the seed-stream constants and the
per-chunk subsample counts (an exact multivariate hypergeometric draw, tested on its own) come from the
library.
"""

from __future__ import annotations

import numpy as np

from lit_streaming.sampling.ids import CHUNK_ORDER_STREAM, SUBSAMPLE_STREAM, WINDOW_STREAM

EMPTY = np.zeros(0, dtype=np.int64)


def rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


def ref_rank_length(n: int, world_size: int, batch_size: int, drop_last: bool) -> int:
    if drop_last:
        return (n // world_size) // batch_size * batch_size
    return -(-n // world_size)


def ref_rank_positions(n: int, world_size: int, rank: int, batch_size: int, drop_last: bool) -> np.ndarray:
    """Positions of a length-n sequence that rank ``rank`` takes, in order (wrap-around pads included)."""
    m = ref_rank_length(n, world_size, batch_size, drop_last)
    if m == 0:
        return EMPTY
    if drop_last:
        start = rank * (n // world_size)
        return np.arange(start, start + m, dtype=np.int64)
    return np.arange(rank * m, (rank + 1) * m, dtype=np.int64) % n


def ref_partition(
    seq: np.ndarray, world_size: int, rank: int, batch_size: int, drop_last: bool
) -> np.ndarray:
    return seq[ref_rank_positions(len(seq), world_size, rank, batch_size, drop_last)]


def ref_chunk_ids(chunk: int, size: int, count: int, seed: int) -> np.ndarray:
    """Sorted local ids of one chunk: every id count // size times, plus count % size distinct extra ids."""
    if size == 0 or count == 0:
        return EMPTY
    whole, extra = divmod(count, size)
    parts = [np.repeat(np.arange(size, dtype=np.int64), whole)]
    if extra:
        parts.append(rng(SUBSAMPLE_STREAM, seed, chunk).choice(size, size=extra, replace=False))
    return np.sort(np.concatenate(parts)).astype(np.int64)


def ref_epoch(chunk_sizes, counts, seed: int, epoch: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    """(global ids, chunk of each id) of the whole epoch, chunk after chunk in the epoch's chunk order."""
    sizes = [int(s) for s in chunk_sizes]
    num_chunks = len(sizes)
    order = rng(CHUNK_ORDER_STREAM, seed, epoch).permutation(num_chunks) if shuffle else range(num_chunks)
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    ids, chunks = [EMPTY], [EMPTY]
    for k in order:
        k = int(k)
        ids.append(ref_chunk_ids(k, sizes[k], int(counts[k]), seed) + offsets[k])
        chunks.append(np.full(int(counts[k]), k, dtype=np.int64))
    return np.concatenate(ids), np.concatenate(chunks)


def ref_pieces(chunks: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Piece index of every position a rank takes: a new piece starts where the chunk changes or where the
    positions stop being consecutive (the wrap-around of the pads)."""
    if positions.size == 0:
        return EMPTY
    new = np.ones(positions.size, dtype=bool)
    new[1:] = (chunks[positions[1:]] != chunks[positions[:-1]]) | (positions[1:] != positions[:-1] + 1)
    return np.cumsum(new) - 1


def ref_rank_plan(
    chunk_sizes,
    counts,
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
    drop_last: bool,
    world_size: int,
    rank: int,
    batch_size: int,
    shuffle_window: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(keys, window of each position) of rank ``rank``'s epoch, eagerly."""
    ids, chunks = ref_epoch(chunk_sizes, counts, seed, epoch, shuffle)
    positions = ref_rank_positions(ids.size, world_size, rank, batch_size, drop_last)
    windows = ref_pieces(chunks, positions) // shuffle_window
    out = []
    for w in range(int(windows.max()) + 1 if windows.size else 0):
        window_ids = ids[positions[windows == w]]
        if shuffle:
            window_ids = window_ids[
                rng(WINDOW_STREAM, seed, epoch, world_size, rank, w).permutation(window_ids.size)
            ]
        out.append(window_ids)
    return (np.concatenate(out) if out else EMPTY), windows


def ref_window_chunks(chunk_sizes, counts, **kw) -> list[list[int]]:
    """The chunks of each window of a rank, in piece order (what a window's reader touches)."""
    ids, chunks = ref_epoch(chunk_sizes, counts, kw["seed"], kw["epoch"], kw["shuffle"])
    positions = ref_rank_positions(ids.size, kw["world_size"], kw["rank"], kw["batch_size"], kw["drop_last"])
    pieces = ref_pieces(chunks, positions)
    windows = pieces // kw["shuffle_window"]
    out: list[list[int]] = [[] for _ in range(int(windows.max()) + 1 if windows.size else 0)]
    for p in np.unique(pieces):
        first = int(np.flatnonzero(pieces == p)[0])
        out[int(windows[first])].append(int(chunks[positions[first]]))
    return out


def ref_resumed(native, *, world_size: int, rank: int, batch_size: int, drop_last: bool, resume_chain=()):
    """Elastic chain, eagerly: each old rank's unconsumed rest, concatenated in rank order, is re-partitioned
    for the next world size (no further shuffle); the last rest is partitioned for ``world_size``."""
    chain = [(int(w), int(c)) for w, c in resume_chain]
    if not chain:
        return native(world_size, rank)
    w0, c0 = chain[0]
    rest = np.concatenate([EMPTY] + [native(w0, r)[c0:] for r in range(w0)])
    for w, c in chain[1:]:
        rest = np.concatenate(
            [EMPTY] + [ref_partition(rest, w, r, batch_size, drop_last)[c:] for r in range(w)]
        )
    return ref_partition(rest, world_size, rank, batch_size, drop_last)


def ref_mix_keys(choices: np.ndarray, child_keys: list[np.ndarray], key_offsets: list[int]) -> np.ndarray:
    """A mix's keys from its child choices: position p holds its child's next key, offset into the key space."""
    nxt = [0] * len(child_keys)
    out = np.empty(len(choices), dtype=np.int64)
    for p, c in enumerate(np.asarray(choices).tolist()):
        out[p] = child_keys[c][nxt[c]] + key_offsets[c]
        nxt[c] += 1
    return out


def ref_child_positions(choices: np.ndarray, num_children: int) -> np.ndarray:
    """(len + 1, children): row p = how many positions before p chose each child."""
    out = np.zeros((len(choices) + 1, num_children), dtype=np.int64)
    if len(choices):
        onehot = np.zeros((len(choices), num_children), dtype=np.int64)
        onehot[np.arange(len(choices)), np.asarray(choices, dtype=np.int64)] = 1
        np.cumsum(onehot, axis=0, out=out[1:])
    return out
