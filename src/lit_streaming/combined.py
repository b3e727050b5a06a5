"""CombinedStreamingDataset: several datasets mixed by weight, with the same exactly-once and resume contracts.

The mix is one draw per epoch, identical on every rank (so ranks stay in step) and split across workers by
batch like any other stream, so workers never repeat each other's draw and each epoch draws anew.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from lit_streaming import sampling
from lit_streaming.dataset import StreamingDataset
from lit_streaming.iteration import IterationControl

_BATCHING = ("stratified", "per_stream")


class CombinedStreamingDataset(IterableDataset):
    """Mix ``datasets`` by ``weights`` (normalised; default proportional to dataset length).

    ``iterate_over_all=True`` goes on until every dataset is exhausted (the weights renormalise as datasets run
    out); ``False`` takes exactly each dataset's weight share of an epoch that ends as the first dataset is
    exhausted (the same length every epoch, in a new random order). ``batching_method="stratified"`` draws a dataset per sample,
    ``"per_stream"`` one per batch, so every batch comes from a single dataset (a dataset's last < batch_size
    samples are then not used in that epoch).
    """

    def __init__(
        self,
        datasets: Sequence[StreamingDataset],
        seed: int = 42,
        weights: Sequence[float] | None = None,
        iterate_over_all: bool = True,
        batching_method: str = "stratified",
    ) -> None:
        if not datasets:
            raise ValueError("`datasets` is empty")
        for i, ds in enumerate(datasets):
            if not isinstance(ds, StreamingDataset):
                raise TypeError(f"datasets[{i}] is a {type(ds).__name__}, expected a StreamingDataset")
        if batching_method not in _BATCHING:
            raise ValueError(f"`batching_method` must be one of {_BATCHING}, got {batching_method!r}")
        if weights is not None:
            if len(weights) != len(datasets):
                raise ValueError(f"`weights` has {len(weights)} entries for {len(datasets)} datasets")
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"`weights` must be non-negative and not all zero, got {list(weights)}")
        self.datasets = list(datasets)
        self.seed = int(seed)
        lengths = [len(d) for d in self.datasets]
        raw = list(weights) if weights is not None else lengths
        total = float(sum(raw))
        self.weights = [w / total for w in raw] if total > 0 else [1.0 / len(raw)] * len(raw)
        self.iterate_over_all = iterate_over_all
        self.batching_method = batching_method
        self._control = IterationControl()

    def _choices(self, epoch: int, world_size: int, batch_size: int) -> np.ndarray:
        child_lengths = [d.epoch_length(world_size, 1) for d in self.datasets]
        return sampling.mix_choices(
            child_lengths,
            self.weights,
            self.seed,
            epoch,
            self.iterate_over_all,
            batch_size,
            self.batching_method == "per_stream",
        )

    def epoch_length(self, world_size: int, batch_size: int) -> int:
        """Samples each rank yields per epoch (the same every epoch)."""
        return self._length(self._control.epoch, world_size, batch_size)

    def _length(self, epoch: int, world_size: int, batch_size: int) -> int:
        m = len(self._choices(epoch, world_size, batch_size))
        return m // batch_size * batch_size if self._drop_last(world_size) else m

    def _drop_last(self, world_size: int) -> bool:
        return any(d.resolved_drop_last(world_size) for d in self.datasets)

    def __len__(self) -> int:
        return self._length(self._control.epoch, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        self._control.epoch = int(epoch)

    def configure_iteration(
        self, epoch: int, start: int, batch_size: int, world_size: int, rank: int, num_workers: int
    ) -> None:
        self._control.epoch = epoch
        self._control.configure(epoch, start, batch_size, world_size, rank, num_workers)

    @property
    def resume_chain(self) -> tuple[tuple[int, int], ...]:
        return ()

    def set_resume_chain(self, chain: tuple[tuple[int, int], ...]) -> None:
        if chain:
            raise ValueError(
                "CombinedStreamingDataset cannot resume with a different world size; resume with the saved one"
            )

    def order_settings(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "seed": self.seed,
            "weights": self.weights,
            "iterate_over_all": self.iterate_over_all,
            "batching_method": self.batching_method,
            "datasets": [d.order_settings() for d in self.datasets],
        }

    def __iter__(self) -> Iterator[Any]:
        ctx = self._control.current()
        choices = self._choices(ctx.epoch, ctx.world_size, ctx.batch_size)
        m = self._length(ctx.epoch, ctx.world_size, ctx.batch_size)
        positions = sampling.mix_positions(choices[:m])
        mine = sampling.worker_ids(np.arange(m), ctx.start, ctx.batch_size, ctx.num_workers, ctx.worker_id)
        sequences = [d.rank_sequence(ctx.epoch, ctx.world_size, ctx.rank, 1) for d in self.datasets]
        children, local = choices[mine].astype(np.int64), positions[mine]
        ids = np.empty(len(mine), dtype=np.int64)
        for c, dataset in enumerate(self.datasets):
            picked = children == c
            ids[picked] = sequences[c][local[picked]]
            dataset.prefetch(ids[picked])
        for child, i in zip(children.tolist(), ids.tolist()):
            yield self.datasets[child][i]
