"""Lazy key sequences: one rank's epoch as structure over chunks, materialised one window at a time.

A :class:`KeySequence` answers "which keys sit at positions [lo, hi)?" without holding the whole sequence.
The leaves (:class:`WindowedShare`) hold O(chunks) integers; composition (:class:`Slice`, :class:`Concat`,
:class:`Cycle`) expresses rank partitions, pad wrap-around and elastic-resume remainders as arithmetic on
lengths. Keys are int64 sample ids of a dataset (or, for a mix, ids offset into the mix's key space).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from lit_streaming.errors import LitStreamingValueError
from lit_streaming.sampling.ids import WINDOW_STREAM, chunk_ids, make_rng

_EMPTY = np.zeros(0, dtype=np.int64)


class KeySequence(ABC):
    """An immutable sequence of ``length`` int64 keys, read by position range."""

    length: int

    @abstractmethod
    def keys(self, lo: int, hi: int) -> np.ndarray:
        """The keys at positions [lo, hi) (0 <= lo <= hi <= length), in order."""

    @abstractmethod
    def chunk_runs(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        """(leaf dataset, chunk indices) that reading [lo, hi) touches, in order (repeats allowed): a
        prefetch hint. Leaves are numbered as in the key space (a single dataset is leaf 0)."""

    def all_keys(self) -> np.ndarray:
        """Every key (for small sequences and tests: this is O(length))."""
        return self.keys(0, self.length)

    def _check(self, lo: int, hi: int) -> None:
        if not 0 <= lo <= hi <= self.length:
            raise IndexError(f"range [{lo}, {hi}) outside a sequence of length {self.length}")


class ChunkGeometry:
    """The epoch-independent facts a plan needs about a dataset: items per chunk and ids per chunk."""

    def __init__(self, chunk_sizes: Sequence[int] | np.ndarray, counts: np.ndarray, seed: int) -> None:
        self.sizes = np.asarray(chunk_sizes, dtype=np.int64).reshape(-1)
        self.counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        self.offsets = np.zeros(self.sizes.size + 1, dtype=np.int64)
        np.cumsum(self.sizes, out=self.offsets[1:])
        self.seed = seed
        self.total = int(self.counts.sum())
        self._identity = bool(np.array_equal(self.sizes, self.counts))

    def ids(self, chunk: int, lo: int, hi: int) -> np.ndarray:
        """Global ids [lo, hi) of chunk ``chunk``'s sorted contribution."""
        if not 0 <= lo <= hi <= self.counts[chunk]:
            raise IndexError(f"ids [{lo}, {hi}) outside chunk {chunk}'s {int(self.counts[chunk])}")
        base = int(self.offsets[chunk])
        if self._identity:
            return np.arange(base + lo, base + hi, dtype=np.int64)
        local = chunk_ids(chunk, int(self.sizes[chunk]), int(self.counts[chunk]), self.seed)
        return local[lo:hi] + base


class WindowedShare(KeySequence):
    """A rank's share of the epoch: position intervals of the chunk-ordered sequence, shuffled per window.

    The epoch's global sequence is each chunk's ids, chunk after chunk in ``order``. The share is cut into
    pieces (the part of one chunk inside one interval); every ``window_chunks`` consecutive pieces form a
    window whose ids are shuffled together with a generator keyed by (seed, epoch, world size, rank, window),
    so any process rebuilds any window alone. Memory: O(pieces) plus the windows in use.
    """

    _CACHED_WINDOWS = 2

    def __init__(
        self,
        geometry: ChunkGeometry,
        order: np.ndarray,
        intervals: Sequence[tuple[int, int]],
        *,
        window_chunks: int,
        shuffle: bool,
        key: tuple[int, ...],
    ) -> None:
        counts = geometry.counts[order]
        starts = np.zeros(order.size + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        chunks, los, lens = [], [], []
        for a, b in intervals:
            if b <= a:
                continue
            first = int(np.searchsorted(starts, a, side="right")) - 1
            last = int(np.searchsorted(starts, b, side="left"))
            idx = np.arange(first, last, dtype=np.int64)
            lo = np.maximum(a - starts[idx], 0)
            hi = np.minimum(b - starts[idx], counts[idx])
            keep = hi > lo
            chunks.append(order[idx[keep]])
            los.append(lo[keep])
            lens.append((hi - lo)[keep])
        self.geometry = geometry
        self.piece_chunk = np.concatenate(chunks) if chunks else _EMPTY
        self.piece_lo = np.concatenate(los) if los else _EMPTY
        piece_len = np.concatenate(lens) if lens else _EMPTY
        self.piece_start = np.zeros(piece_len.size + 1, dtype=np.int64)
        np.cumsum(piece_len, out=self.piece_start[1:])
        self.length = int(self.piece_start[-1])
        self.window_chunks = int(window_chunks)
        self.window_start = self.piece_start[:: self.window_chunks].copy()
        if self.window_start[-1] != self.length:
            self.window_start = np.append(self.window_start, self.length)
        self.shuffle = shuffle
        self.key = tuple(int(k) for k in key)
        self.leaf = 0
        self._windows: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def num_windows(self) -> int:
        return self.window_start.size - 1

    def materialised_ids(self) -> int:
        """Ids held in memory right now (the windows in use): bounded by two windows whatever the length."""
        return sum(ids.size for ids in self._windows.values())

    def window(self, w: int) -> np.ndarray:
        """The ids of window ``w`` in their shuffled order (cached: readers move forward)."""
        cached = self._windows.get(w)
        if cached is not None:
            return cached
        first, last = w * self.window_chunks, min((w + 1) * self.window_chunks, self.piece_chunk.size)
        parts = [
            self.geometry.ids(int(c), int(lo), int(lo + n))
            for c, lo, n in zip(
                self.piece_chunk[first:last].tolist(),
                self.piece_lo[first:last].tolist(),
                np.diff(self.piece_start[first : last + 1]).tolist(),
            )
        ]
        ids = np.concatenate(parts) if parts else _EMPTY
        if self.shuffle and ids.size > 1:
            ids = ids[make_rng(WINDOW_STREAM, *self.key, w).permutation(ids.size)]
        self._windows[w] = ids
        while len(self._windows) > self._CACHED_WINDOWS:
            self._windows.popitem(last=False)
        return ids

    def keys(self, lo: int, hi: int) -> np.ndarray:
        self._check(lo, hi)
        if lo == hi:
            return _EMPTY
        out = []
        w = int(np.searchsorted(self.window_start, lo, side="right")) - 1
        while lo < hi:
            ws, we = int(self.window_start[w]), int(self.window_start[w + 1])
            take = min(hi, we)
            out.append(self.window(w)[lo - ws : take - ws])
            lo, w = take, w + 1
        return out[0] if len(out) == 1 else np.concatenate(out)

    def chunk_runs(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        self._check(lo, hi)
        if lo == hi:
            return []
        if self.shuffle:
            # A shuffled window's positions hold ids of any of its pieces: name all pieces of the windows read.
            w0 = int(np.searchsorted(self.window_start, lo, side="right")) - 1
            w1 = int(np.searchsorted(self.window_start, hi, side="left"))
            first, last = w0 * self.window_chunks, min(w1 * self.window_chunks, self.piece_chunk.size)
        else:
            first = int(np.searchsorted(self.piece_start, lo, side="right")) - 1
            last = int(np.searchsorted(self.piece_start, hi, side="left"))
        return [(self.leaf, self.piece_chunk[first:last])]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_windows"] = OrderedDict()
        return state


class Slice(KeySequence):
    """Positions [start, start + length) of ``base``."""

    def __init__(self, base: KeySequence, start: int, length: int) -> None:
        if start < 0 or length < 0 or start + length > base.length:
            raise LitStreamingValueError(
                f"slice [{start}, {start + length}) outside a sequence of length {base.length}"
            )
        self.base, self.start, self.length = base, int(start), int(length)

    def keys(self, lo: int, hi: int) -> np.ndarray:
        self._check(lo, hi)
        return self.base.keys(self.start + lo, self.start + hi)

    def chunk_runs(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        self._check(lo, hi)
        return self.base.chunk_runs(self.start + lo, self.start + hi)


class Concat(KeySequence):
    """``parts`` one after the other."""

    def __init__(self, parts: Sequence[KeySequence]) -> None:
        self.parts = [p for p in parts if p.length > 0]
        self.bounds = np.zeros(len(self.parts) + 1, dtype=np.int64)
        np.cumsum([p.length for p in self.parts], out=self.bounds[1:])
        self.length = int(self.bounds[-1])

    def _pieces(self, lo: int, hi: int):
        i = int(np.searchsorted(self.bounds, lo, side="right")) - 1
        while lo < hi:
            start, end = int(self.bounds[i]), int(self.bounds[i + 1])
            take = min(hi, end)
            yield self.parts[i], lo - start, take - start
            lo, i = take, i + 1

    def keys(self, lo: int, hi: int) -> np.ndarray:
        self._check(lo, hi)
        out = [part.keys(a, b) for part, a, b in self._pieces(lo, hi)]
        if not out:
            return _EMPTY
        return out[0] if len(out) == 1 else np.concatenate(out)

    def chunk_runs(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        self._check(lo, hi)
        return [run for part, a, b in self._pieces(lo, hi) for run in part.chunk_runs(a, b)]


class Cycle(KeySequence):
    """``base`` repeated until ``length`` positions (the pad wrap-around of ``drop_last=False``)."""

    def __init__(self, base: KeySequence, length: int) -> None:
        if base.length == 0 and length > 0:
            raise LitStreamingValueError("cannot cycle an empty sequence")
        self.base, self.length = base, int(length)

    def _pieces(self, lo: int, hi: int):
        n = self.base.length
        while lo < hi:
            offset = lo % n
            take = min(hi - lo, n - offset)
            yield offset, offset + take
            lo += take

    def keys(self, lo: int, hi: int) -> np.ndarray:
        self._check(lo, hi)
        out = [self.base.keys(a, b) for a, b in self._pieces(lo, hi)]
        if not out:
            return _EMPTY
        return out[0] if len(out) == 1 else np.concatenate(out)

    def chunk_runs(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        self._check(lo, hi)
        return [run for a, b in self._pieces(lo, hi) for run in self.base.chunk_runs(a, b)]


def first_use_order(runs: list[np.ndarray]) -> list[int]:
    """Distinct chunks of ``runs`` in order of first appearance (O(chunks log chunks))."""
    if not runs:
        return []
    chunks = np.concatenate(runs)
    if chunks.size == 0:
        return []
    _, where = np.unique(chunks, return_index=True)
    return chunks[np.sort(where)].tolist()
