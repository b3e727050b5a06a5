"""How well a plan mixes chunks within a batch (DESIGN.md section 5 asks to measure it)."""

from __future__ import annotations

import numpy as np

from lit_streaming.errors import LitStreamingValueError


def batch_diversity(rank_seq: np.ndarray, chunk_of_ids: np.ndarray, batch_size: int) -> float:
    """Mean number of distinct chunks per full batch of ``rank_seq``.

    ``chunk_of_ids`` is the chunk index of each entry of ``rank_seq`` (aligned with it). A
    trailing partial batch is ignored unless it is the only batch; an empty sequence gives 0.
    """
    chunks = np.asarray(chunk_of_ids)
    if chunks.size != np.asarray(rank_seq).size:
        raise LitStreamingValueError("chunk_of_ids must be aligned with rank_seq (one chunk index per entry)")
    if int(batch_size) != batch_size or batch_size < 1:
        raise LitStreamingValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if chunks.size == 0:
        return 0.0
    full = chunks.size // batch_size
    if full == 0:
        return float(np.unique(chunks).size)
    batches = np.sort(chunks[: full * batch_size].reshape(full, batch_size), axis=1)
    distinct = 1 + np.count_nonzero(batches[:, 1:] != batches[:, :-1], axis=1)
    return float(distinct.mean())


def ideal_diversity(num_chunks: int, batch_size: int) -> float:
    """Expected distinct chunks in a batch of B samples drawn uniformly from C equal chunks:
    C * (1 - (1 - 1/C) ** B); the yardstick for :func:`batch_diversity`."""
    if num_chunks <= 0:
        return 0.0
    return num_chunks * (1.0 - (1.0 - 1.0 / num_chunks) ** batch_size)
