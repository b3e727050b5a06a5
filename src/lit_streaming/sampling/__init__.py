"""Pure, numpy-only sampling plans: which sample ids each rank and worker yields, and in
which order (DESIGN.md sections 5 and 6). No torch, no I/O: every rank recomputes the same
plan from (seed, epoch, dataset, W, B) at iteration time."""

from lit_streaming.sampling.diversity import batch_diversity, ideal_diversity
from lit_streaming.sampling.ids import chunk_of, chunk_offsets, epoch_order, subsample_count, subsample_ids
from lit_streaming.sampling.mixing import mix_choices, mix_positions
from lit_streaming.sampling.plan import (
    DEFAULT_SHUFFLE_WINDOW,
    num_batches,
    partition,
    rank_length,
    rank_sequence,
    rank_sequence_length,
    window_shuffle,
    worker_ids,
)

__all__ = [
    "DEFAULT_SHUFFLE_WINDOW",
    "batch_diversity",
    "chunk_of",
    "chunk_offsets",
    "epoch_order",
    "ideal_diversity",
    "mix_choices",
    "mix_positions",
    "num_batches",
    "partition",
    "rank_length",
    "rank_sequence",
    "rank_sequence_length",
    "subsample_count",
    "subsample_ids",
    "window_shuffle",
    "worker_ids",
]
