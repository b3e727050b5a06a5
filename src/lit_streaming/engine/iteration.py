"""Who is iterating: (epoch, resume point, batch size, rank, world size, workers), decided in the main process.

The loader writes these into a tiny shared-memory block before each epoch. Worker processes, persistent ones
included, read it when their iterator starts, so they never work from a stale copy of the dataset object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.utils.data import get_worker_info

from lit_streaming.engine import distributed


@dataclass(frozen=True)
class IterationContext:
    epoch: int
    start: int
    batch_size: int
    world_size: int
    rank: int
    num_workers: int
    worker_id: int


class IterationControl:
    """The shared block. Created in the process that configures it; inherited by that process's workers."""

    _FIELDS = 7

    def __init__(self) -> None:
        self._block: torch.Tensor | None = None
        self._owner_pid = -1
        self.epoch = 0  # used when no loader configured the iteration (plain ``for x in dataset``)

    def configure(
        self, epoch: int, start: int, batch_size: int, world_size: int, rank: int, workers: int
    ) -> None:
        if self._block is None or self._owner_pid != os.getpid():
            # A dataset pickled into another rank's process must not share that rank's block.
            self._block = torch.zeros(self._FIELDS, dtype=torch.int64).share_memory_()
            self._owner_pid = os.getpid()
        self._block.copy_(torch.tensor([1, epoch, start, batch_size, world_size, rank, workers]))

    def current(self) -> IterationContext:
        info = get_worker_info()
        worker_id, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        configured = self._block is not None and (info is not None or self._owner_pid == os.getpid())
        if configured and int(self._block[0]) == 1:  # type: ignore[index]
            _, epoch, start, batch, world_size, rank, n = self._block.tolist()  # type: ignore[union-attr]
            return IterationContext(epoch, start, batch, world_size, rank, max(1, n), worker_id)
        rank, world_size = distributed.world()
        return IterationContext(self.epoch, 0, 1, world_size, rank, workers, worker_id)
