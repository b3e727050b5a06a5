"""StreamingDataLoader: a torch DataLoader that knows its exact position and can resume from it.

The position is counted here, in the main process, at the moment a batch is handed to the caller, so a
checkpoint taken while training on batch k says "k batches consumed" whatever the workers have prefetched.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from lit_streaming import distributed, profiling, sampling
from lit_streaming.batching import PooledCollate
from lit_streaming.combined import CombinedStreamingDataset
from lit_streaming.dataset import StreamingDataset

STATE_VERSION = 1


class ResumeError(ValueError):
    """A saved loader state that cannot be continued exactly with the current settings."""


class StreamingDataLoader(DataLoader):
    """Batches a StreamingDataset / CombinedStreamingDataset; ``state_dict()`` / ``load_state_dict()`` resume
    mid-epoch exactly. ``shuffle`` / ``drop_last`` override the dataset's settings, as in LitData.

    Every rank yields the same number of batches and ``len(loader)`` is that number. The state is small, plain
    Python, and identical on every rank (Lightning saves rank 0's).

    ``limit_batches`` (attribute, default ``None``): end every epoch after this many batches, as
    ``Trainer(limit_train_batches=...)`` does (StreamingDataModule sets it from the Trainer), so that a state
    saved after the last of them resumes into the next epoch. ``len(loader)`` stays the full epoch's length.
    """

    def __init__(
        self,
        dataset: StreamingDataset | CombinedStreamingDataset,
        batch_size: int = 1,
        num_workers: int = 0,
        profile_batches: bool | int = False,
        profile_dir: str | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        collate_fn: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(dataset, (StreamingDataset, CombinedStreamingDataset)):
            raise TypeError(
                f"StreamingDataLoader needs a StreamingDataset or CombinedStreamingDataset, got {type(dataset).__name__}"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        children = dataset.datasets if isinstance(dataset, CombinedStreamingDataset) else [dataset]
        for child in children:
            if shuffle is not None:
                child.shuffle = bool(shuffle)
            if drop_last is not None:
                child.drop_last = bool(drop_last)
        self.shuffle = shuffle
        self.profile_batches = profile_batches
        self.profile_dir = profile_dir
        traced = 10 if profile_batches is True else int(profile_batches or 0)
        self._profile_out = (profile_dir or "lit_streaming_profile") if traced else None
        if self._profile_out:
            os.makedirs(self._profile_out, exist_ok=True)
        for child in children:
            child.enable_profiling(self._profile_out, traced)
        self._traced_batches = traced
        kwargs.pop("sampler", None)
        kwargs.pop("batch_sampler", None)
        if collate_fn is None and num_workers > 0 and not kwargs.get("pin_memory", False):
            # Reused shared-memory batch slots (see batching.py). pin_memory copies batches on a torch thread we
            # cannot observe, so slots could not be recycled: it keeps torch's default path.
            collate_fn = PooledCollate(num_workers)
        super().__init__(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_fn,
            drop_last=False,
            **kwargs,
        )
        self._epoch = 0
        self._consumed = 0
        self._started = False
        self._pending: dict[str, Any] | None = None
        self._world = (0, 1)
        self.limit_batches: int | None = None

    # ---- position --------------------------------------------------------------------------------------------
    def _epoch_length(self, world_size: int) -> int:
        return self.dataset.epoch_length(world_size, self.batch_size)  # type: ignore[union-attr]

    def _epoch_end(self, world_size: int) -> int:
        """Samples this rank yields before its epoch ends: the epoch's length, or ``limit_batches`` batches."""
        m = self._epoch_length(world_size)
        return m if self.limit_batches is None else min(m, self.limit_batches * self.batch_size)  # type: ignore[operator]

    def _limit_reached(self) -> bool:
        return self.limit_batches is not None and self._consumed >= self._epoch_end(self._world[1])

    def __len__(self) -> int:
        """Batches this rank yields in a full epoch (the same on every rank)."""
        _, world_size = distributed.world()
        return sampling.num_batches(self._epoch_length(world_size), 0, self.batch_size)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at ``epoch`` (a fresh epoch, position 0)."""
        self._epoch = int(epoch)
        self._consumed = 0
        self._started = False
        self._pending = None

    def __iter__(self) -> Iterator[Any]:
        rank, world_size = distributed.world()
        self._world = (rank, world_size)
        chain_before = self.dataset.resume_chain  # type: ignore[union-attr]
        if self._pending is not None:
            start = self._apply_pending(world_size)
        else:
            self._epoch += 1 if self._started else 0
            self.dataset.set_resume_chain(())  # type: ignore[union-attr]
            start = 0
        if self.dataset.resume_chain != chain_before:  # type: ignore[union-attr]
            self._iterator = None  # persistent workers hold the old plan: start fresh ones
        self._started = True
        self._consumed = start
        m = self._epoch_length(world_size)
        self.dataset.configure_iteration(  # type: ignore[union-attr]
            self._epoch, start, self.batch_size, world_size, rank, self.num_workers
        )
        if start >= self._epoch_end(world_size):
            return
        # Profiling records how long the consumer waits for each of the first batches (see profiling.py).
        recorder = profiling.TraceRecorder(f"rank {rank} main") if self._profile_out else None
        traced = min(self._traced_batches, sampling.num_batches(m, start, self.batch_size))  # type: ignore[arg-type]
        iterator = super().__iter__()
        for n in itertools.count():
            waited_from = profiling.now_us()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            if recorder is not None and n < traced:
                recorder.span("wait_for_batch", "loader", waited_from, profiling.now_us(), batch=n)
                if n == traced - 1:
                    self.profile_trace = profiling.merge(
                        self._profile_out,  # type: ignore[arg-type]
                        self._epoch,
                        rank,
                        recorder,
                        min(max(1, self.num_workers), traced),
                        timeout=30.0,
                    )
            self._consumed = min(self._consumed + self.batch_size, m)  # type: ignore[operator]
            self._watch(batch)
            yield batch
            if self._limit_reached():
                return

    def _watch(self, batch: Any) -> None:
        if isinstance(self.collate_fn, PooledCollate):
            self.collate_fn.watch(batch)

    # ---- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self._pending is not None:
            return dict(self._pending)
        _, world_size = self._world
        return {
            "version": STATE_VERSION,
            "epoch": self._epoch,
            "consumed": self._consumed,
            "epoch_length": self._epoch_end(world_size),
            "started": self._started,
            "world_size": world_size,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "resume_chain": [list(seg) for seg in self.dataset.resume_chain],  # type: ignore[union-attr]
            "settings": self.dataset.order_settings(),  # type: ignore[union-attr]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` at the next ``iter()``. Refuses states whose order cannot be reproduced."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ResumeError(f"Unsupported StreamingDataLoader state (version {state.get('version')!r})")
        settings = self.dataset.order_settings()  # type: ignore[union-attr]
        if state["settings"] != settings:
            diff = _diff(state["settings"], settings)
            raise ResumeError(f"Cannot resume: settings that change the sample order differ: {diff}")
        if state["batch_size"] != self.batch_size:
            raise ResumeError(
                f"Cannot resume: saved with batch_size={state['batch_size']}, loader has {self.batch_size}"
            )
        self._pending = dict(state)
        self._iterator = None  # persistent workers restart with the restored plan

    def _apply_pending(self, world_size: int) -> int:
        state, self._pending = self._pending, None
        assert state is not None
        self._epoch = state["epoch"]
        chain = tuple(tuple(seg) for seg in state["resume_chain"])
        if not state["started"]:
            self.dataset.set_resume_chain(())  # type: ignore[union-attr]
            return 0
        if state["consumed"] >= state["epoch_length"]:
            self._epoch += 1
            self.dataset.set_resume_chain(())  # type: ignore[union-attr]
            return 0
        if state["world_size"] == world_size:
            self.dataset.set_resume_chain(chain)  # type: ignore[union-attr]
            return state["consumed"]
        self.dataset.set_resume_chain(chain + ((state["world_size"], state["consumed"]),))  # type: ignore[union-attr]
        return 0


def _diff(saved: Any, current: Any, path: str = "") -> str:
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            if saved.get(key) != current.get(key):
                return _diff(saved.get(key), current.get(key), f"{path}.{key}" if path else key)
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for i, (a, b) in enumerate(zip(saved, current, strict=False)):
            if a != b:
                return _diff(a, b, f"{path}[{i}]")
    return f"{path or 'value'}: saved {saved!r}, now {current!r}"
