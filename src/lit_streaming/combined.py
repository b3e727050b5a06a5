"""CombinedStreamingDataset: several streams mixed by weight, with the same exactly-once and resume contracts.

The mix is drawn per epoch in blocks of positions (``sampling.mixing``), identical on every rank (so ranks stay
in step), and split across workers by batch like any other stream. Children may be any :class:`Stream`, mixes
included, and the mix resumes across a world-size change like a single dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lit_streaming import sampling
from lit_streaming.dataset import StreamingDataset
from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError
from lit_streaming.sampling.sequence import Slice
from lit_streaming.stream import Stream

_BATCHING = ("stratified", "per_stream")


class CombinedStreamingDataset(Stream):
    """Mix ``datasets`` by ``weights`` (normalised; default proportional to dataset length).

    ``iterate_over_all=True`` goes on until every dataset is exhausted, drawing by length (the weights of the
    datasets left renormalise as they run out); it does not take ``weights``, as in LitData. ``False`` takes
    exactly each dataset's weight share of an epoch that ends as the first dataset is exhausted (the same
    length every epoch, in a new random order). ``batching_method="stratified"`` draws a dataset per sample,
    ``"per_stream"`` one per batch, so every batch comes from a single dataset (a dataset's last < batch_size
    samples are then not used in that epoch).
    """

    def __init__(
        self,
        datasets: Sequence[Stream],
        seed: int = 42,
        weights: Sequence[float] | None = None,
        iterate_over_all: bool = True,
        batching_method: str = "stratified",
    ) -> None:
        super().__init__()
        if not datasets:
            raise LitStreamingValueError("`datasets` is empty")
        for i, ds in enumerate(datasets):
            if not isinstance(ds, Stream):
                raise LitStreamingTypeError(
                    f"datasets[{i}] is a {type(ds).__name__}, expected a streaming dataset"
                )
        if batching_method not in _BATCHING:
            raise LitStreamingValueError(
                f"`batching_method` must be one of {_BATCHING}, got {batching_method!r}"
            )
        if weights is not None:
            if iterate_over_all:
                raise LitStreamingValueError(
                    "`weights` needs iterate_over_all=False: iterating over all samples of every dataset "
                    "fixes each dataset's share to its length, so weights could not be honoured"
                )
            if len(weights) != len(datasets):
                raise LitStreamingValueError(
                    f"`weights` has {len(weights)} entries for {len(datasets)} datasets"
                )
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise LitStreamingValueError(
                    f"`weights` must be non-negative and not all zero, got {list(weights)}"
                )
        self.datasets = list(datasets)
        self.seed = int(seed)
        raw = list(weights) if weights is not None else [len(d) for d in self.datasets]
        total = float(sum(raw))
        self.weights = [w / total for w in raw] if total > 0 else [1.0 / len(raw)] * len(raw)
        self.iterate_over_all = iterate_over_all
        self.batching_method = batching_method
        self._mix_cache: tuple[tuple[int, int, int], sampling.MixPlan] | None = None

    # ---- the Stream protocol -------------------------------------------------------------------------------
    def leaves(self) -> list[StreamingDataset]:
        return [leaf for d in self.datasets for leaf in d.leaves()]

    def drop_last_for(self, world_size: int) -> bool:
        return any(d.drop_last_for(world_size) for d in self.datasets)

    def _mix_args(self, world_size: int, batch_size: int) -> tuple[list[int], list[float], bool, int, bool]:
        child_lengths = [d.native_length(world_size, 1) for d in self.datasets]
        per_stream = self.batching_method == "per_stream"
        return child_lengths, self.weights, self.iterate_over_all, batch_size, per_stream

    def native_length(self, world_size: int, batch_size: int) -> int:
        return self._whole_batches(
            sampling.mix_length(*self._mix_args(world_size, batch_size)), world_size, batch_size
        )

    def _whole_batches(self, m: int, world_size: int, batch_size: int) -> int:
        """A mix of ``m`` positions cut to whole batches when ranks drop their tail."""
        return m // batch_size * batch_size if self.drop_last_for(world_size) else m

    def mix_plan(self, epoch: int, world_size: int, batch_size: int) -> sampling.MixPlan:
        """The epoch's draw (the same on every rank), computed once per process and epoch."""
        key = (epoch, world_size, batch_size)
        if self._mix_cache is None or self._mix_cache[0] != key:
            lengths, weights, over_all, b, per_stream = self._mix_args(world_size, batch_size)
            self._mix_cache = (
                key,
                sampling.MixPlan(lengths, weights, self.seed, epoch, over_all, b, per_stream),
            )
        return self._mix_cache[1]

    def rank_plan(self, epoch: int, world_size: int, rank: int, batch_size: int) -> sampling.KeySequence:
        mix = self.mix_plan(epoch, world_size, batch_size)
        children = [d.rank_plan(epoch, world_size, rank, 1) for d in self.datasets]
        key_offsets = np.cumsum([0] + [int(d.key_offsets()[-1]) for d in self.datasets])
        leaf_offsets = np.cumsum([0] + [len(d.leaves()) for d in self.datasets])
        seq = sampling.MixSequence(mix, children, key_offsets[:-1], leaf_offsets[:-1])
        m = self._whole_batches(seq.length, world_size, batch_size)
        return seq if m == seq.length else Slice(seq, 0, m)

    def order_settings(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "seed": self.seed,
            "weights": self.weights,
            "iterate_over_all": self.iterate_over_all,
            "batching_method": self.batching_method,
            "datasets": [d.order_settings() for d in self.datasets],
        }

    def _apply_options(self, shuffle: bool | None, drop_last: bool | None) -> None:
        self.datasets = [d.with_options(shuffle, drop_last) for d in self.datasets]
        self._mix_cache = None

    def __len__(self) -> int:
        """Samples in one epoch on a single process."""
        return self.native_length(1, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.datasets)} datasets, weights={self.weights})"
