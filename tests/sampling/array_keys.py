"""A materialised key sequence for the sampling tests: partitions, compositions and mix children."""

from __future__ import annotations

import numpy as np

from lit_streaming.sampling.sequence import KeySequence


class ArrayKeys(KeySequence):
    """The keys given, in order; key k lies in chunk ``k // keys_per_chunk`` (by default one chunk per key)."""

    def __init__(self, keys, keys_per_chunk: int = 1) -> None:
        self.array = np.asarray(keys, dtype=np.int64)
        self.length = int(self.array.size)
        self.keys_per_chunk = keys_per_chunk

    def keys(self, lo: int, hi: int) -> np.ndarray:
        self._check(lo, hi)
        return self.array[lo:hi]

    def chunk_runs(self, lo: int, hi: int) -> list[tuple[int, np.ndarray]]:
        self._check(lo, hi)
        return [(0, self.array[lo:hi] // self.keys_per_chunk)] if hi > lo else []
