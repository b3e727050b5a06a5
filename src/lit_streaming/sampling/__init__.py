"""Pure, numpy-only sampling plans: which sample ids each rank and worker yields, and in which order
(DESIGN.md sections 5 and 6). No torch, no I/O: every rank recomputes the same plan from
(seed, epoch, dataset, W, B) at iteration time, in O(chunks), and reads it one shuffle window at a time."""

from lit_streaming.sampling.counts import spread
from lit_streaming.sampling.diversity import batch_diversity, ideal_diversity
from lit_streaming.sampling.ids import chunk_of, chunk_offsets, subsample_count, subsample_counts
from lit_streaming.sampling.mixing import MixPlan, MixSequence, mix_length
from lit_streaming.sampling.plan import (
    DEFAULT_SHUFFLE_WINDOW,
    check_chain,
    check_positive,
    dataset_geometry,
    dataset_plan,
    num_batches,
    partition,
    rank_intervals,
    rank_length,
    resumed_length,
    resumed_plan,
    worker_batches,
)
from lit_streaming.sampling.sequence import ChunkGeometry, KeySequence, first_use_order

__all__ = [
    "DEFAULT_SHUFFLE_WINDOW",
    "ChunkGeometry",
    "KeySequence",
    "MixPlan",
    "MixSequence",
    "batch_diversity",
    "check_chain",
    "check_positive",
    "chunk_of",
    "chunk_offsets",
    "dataset_geometry",
    "dataset_plan",
    "first_use_order",
    "ideal_diversity",
    "mix_length",
    "num_batches",
    "partition",
    "rank_intervals",
    "rank_length",
    "resumed_length",
    "resumed_plan",
    "spread",
    "subsample_count",
    "subsample_counts",
    "worker_batches",
]
