"""``train_test_split`` and ``StreamingDataset.subset``: disjoint views of one dataset, each a StreamingDataset.

A view is a table of pieces, rows (storage chunk, first item, end item) in the view's own order, so a split of
a billion-sample dataset costs O(chunks): the view's plan treats each piece as a chunk (its keys are the view's
own indices), shuffles, shards and resumes exactly as a whole dataset does, and reads each key through the
piece table. ``train_test_split`` cuts the pieces as LitData 0.2.76 does (the chunk list permuted with
``np.random.RandomState([seed])``, then consecutive item counts of ``int(len * split)``), so a ported script
gets the same samples in each split as it got from LitData.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from lit_streaming.dataset import StreamingDataset
from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError

_log = logging.getLogger(__name__)


def _offsets(pieces: np.ndarray) -> np.ndarray:
    out = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(pieces[:, 2] - pieces[:, 1], out=out[1:])
    return out


def cut(pieces: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The pieces holding positions [lo, hi) of the view ``pieces`` (O(pieces))."""
    offsets = _offsets(pieces)
    first = int(np.searchsorted(offsets, lo, side="right")) - 1
    last = int(np.searchsorted(offsets, hi, side="left"))
    out = pieces[max(first, 0) : last].copy()
    if out.size == 0 or hi <= lo:
        return np.zeros((0, 3), dtype=np.int64)
    out[0, 1] += lo - offsets[first]
    out[-1, 2] -= offsets[last] - hi
    return out[out[:, 2] > out[:, 1]]


def pieces_of(pieces: np.ndarray, indices: Sequence[int] | slice | range) -> np.ndarray:
    """The pieces of samples ``indices`` of the view ``pieces``, runs of consecutive samples merged."""
    n = int(_offsets(pieces)[-1])
    if isinstance(indices, slice):
        indices = range(*indices.indices(n))
    if isinstance(indices, range) and indices.step == 1:
        return cut(pieces, indices.start, max(indices.start, indices.stop))
    idx = np.asarray(indices)
    if idx.size and (idx.dtype.kind not in "iu" or idx.ndim != 1):
        raise LitStreamingValueError(
            f"subset `indices` must be a slice or a 1-d sequence of ints, got {indices!r}"
        )
    idx = idx.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise LitStreamingValueError(
            f"subset `indices` must be in [0, {n - 1}] for this dataset of {n} samples"
        )
    offsets = _offsets(pieces)
    p = np.searchsorted(offsets, idx, side="right") - 1
    chunk = pieces[p, 0]
    item = pieces[p, 1] + idx - offsets[p]
    # a new run wherever the chunk changes or the item is not the previous one plus one
    starts = np.ones(idx.size, dtype=bool)
    starts[1:] = (chunk[1:] != chunk[:-1]) | (item[1:] != item[:-1] + 1)
    begin = np.flatnonzero(starts)
    end = np.append(begin[1:], idx.size)
    return np.stack([chunk[begin], item[begin], item[end - 1] + 1], axis=1).astype(np.int64)


def train_test_split(
    streaming_dataset: StreamingDataset, splits: list[float], seed: int = 42, shuffle: bool = True
) -> list[StreamingDataset]:
    """Split ``streaming_dataset`` into disjoint StreamingDatasets of ``int(len * split)`` samples each.

    Args:
        streaming_dataset: the dataset (or a subset of one) to split; each split keeps its settings (shuffle,
            seed, transform, subsample, ...).
        splits: fractions in [0, 1] summing to at most 1, e.g. ``[0.8, 0.1, 0.1]``.
        seed: permutes the chunks before cutting (``shuffle=True``), as LitData does with the same seed.
        shuffle: permute the chunks first; ``False`` cuts them in index order.

    Samples are cut out of whole chunks (at most one chunk is shared by two neighbouring splits), so each split
    reads few chunks. ``subsample`` of the dataset applies inside each split (LitData subsamples first).
    """
    if not isinstance(streaming_dataset, StreamingDataset):
        raise LitStreamingTypeError(
            f"train_test_split needs a StreamingDataset, got {type(streaming_dataset).__name__}"
        )
    if any(not isinstance(split, float) for split in splits):
        raise LitStreamingValueError(f"`splits` must be floats, got {splits!r}")
    if not all(0 <= split <= 1 for split in splits):
        raise LitStreamingValueError(f"each of `splits` must be in [0, 1], got {splits!r}")
    if sum(splits) > 1:
        raise LitStreamingValueError(f"`splits` must sum to at most 1, got {splits!r} (sum {sum(splits)})")
    pieces = streaming_dataset.pieces()
    if shuffle:
        # LitData's shuffle_lists_together: the same legacy generator, the same permutation.
        pieces = pieces[np.random.RandomState([seed]).permutation(len(pieces))]
    total = int(_offsets(pieces)[-1])
    counts = [int(total * split) for split in splits]
    if any(count == 0 for count in counts):
        _log.warning("train_test_split: some splits hold 0 samples (splits=%s of %d samples)", splits, total)
    out, lo = [], 0
    for count in counts:
        out.append(streaming_dataset.with_pieces(cut(pieces, lo, lo + count)))
        lo += count
    return out
