"""Batch assembly: stack samples into shared-memory batch slots that are reused across batches.

A fresh shared-memory tensor per batch costs a first touch of every page in the worker (about 5 us a 4 KiB page
on the machines we measured, as much as decoding the images). Instead each worker keeps a pool of slots. A slot
is handed out again only after the main process has dropped every tensor viewing the batch: the main process
watches the received storage with ``weakref.finalize`` and clears the slot's token in a shared table, so holding
batches for as long as you like stays safe (the pool simply grows, up to a cap, then falls back to fresh memory).

Decoders hand out images as CHW views of HWC memory (torchvision's ``decode_jpeg`` does); stacking those into a
contiguous NCHW batch is a stride-C gather that torch runs scalar, at a third of a JPEG decode's cost. OpenCV's
``split`` does the same de-interleave with SIMD straight into the slot's channel planes, at memcpy speed.
"""

from __future__ import annotations

import itertools
import os
import weakref
from typing import Any

import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from lit_streaming.engine.per_process import PerProcess

MAX_SLOTS = 64
_MIN_POOLED_BYTES = 1 << 14  # below this a fresh segment is as cheap as a slot lookup
_HEADER = 64  # bytes before the data: magic, token, worker, slot (keeps the data 64-byte aligned)
_MAGIC = 0x4C53_5054_4F4F_4C31  # "LSPTOOL1"
# element types cv2.split de-interleaves (its CV_8U ... CV_64F depths)
_SPLIT_DTYPES = frozenset(
    {torch.uint8, torch.int8, torch.uint16, torch.int16, torch.int32, torch.float32, torch.float64}
)


class _WorkerPool:
    """The slots of one worker process."""

    def __init__(self, table: torch.Tensor, worker_id: int) -> None:
        self.table = table
        self.worker_id = worker_id
        self.slots: list[torch.UntypedStorage] = []
        self.counter = itertools.count(1)
        self.pid = os.getpid()

    def acquire(self, nbytes: int) -> tuple[torch.UntypedStorage, int] | None:
        busy = self.table[self.worker_id].tolist()
        for index, storage in enumerate(self.slots):
            if busy[index] == 0 and storage.nbytes() - _HEADER >= nbytes:
                return storage, index
        if len(self.slots) >= self.table.shape[1]:
            return None
        size = _HEADER + (nbytes + (1 << 16) - 1) // (1 << 16) * (1 << 16)
        storage = torch.UntypedStorage(size).share_memory_()
        self.slots.append(storage)
        return storage, len(self.slots) - 1

    def stack(self, tensors: list[torch.Tensor]) -> torch.Tensor | None:
        first = tensors[0]
        shape = (len(tensors), *first.shape)
        nbytes = first.element_size() * first.numel() * len(tensors)
        got = self.acquire(nbytes)
        if got is None:
            return None
        storage, index = got
        token = (self.pid << 24) | (next(self.counter) & 0xFFFFFF)
        header = torch.empty(0, dtype=torch.int64).set_(storage, 0, (4,))
        header.copy_(torch.tensor([_MAGIC, token, self.worker_id, index]))
        self.table[self.worker_id, index] = token
        out = torch.empty(0, dtype=first.dtype).set_(storage, _HEADER // first.element_size(), shape)
        return stack_into(out, tensors)


def _cv2() -> Any:
    # Only loaders that stack batches in workers map OpenCV's libraries (~23 MB of RSS per process).
    import cv2

    return cv2


def _is_hwc_view(tensor: torch.Tensor) -> bool:
    """A CHW tensor whose memory is HWC (several channels): what image decoders return."""
    return (
        tensor.dim() == 3
        and tensor.shape[0] > 1
        and tensor.dtype in _SPLIT_DTYPES
        and not tensor.is_contiguous()
        and tensor.permute(1, 2, 0).is_contiguous()
    )


def stack_into(out: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(tensors, out=out)`` (same-shaped tensors), de-interleaving HWC-memory images with SIMD."""
    if not all(_is_hwc_view(t) for t in tensors):
        return torch.stack(tensors, out=out)
    cv2 = _cv2()
    planes = out.numpy()
    for k, image in enumerate(tensors):
        cv2.split(image.permute(1, 2, 0).numpy(), list(planes[k]))
    return out


class PooledCollate:
    """``default_collate`` that stacks large, same-shaped tensors into reusable shared-memory slots.

    Used inside DataLoader worker processes; in the main process it behaves exactly like ``default_collate``.
    """

    def __init__(self, num_workers: int) -> None:
        _cv2()  # imported here, before the workers fork, so that none of them imports it again
        self.table = torch.zeros((max(1, num_workers), MAX_SLOTS), dtype=torch.int64).share_memory_()
        self._pool: PerProcess[_WorkerPool] = PerProcess()

    def __call__(self, batch: list[Any]) -> Any:
        info = get_worker_info()
        if info is None:
            return collate(batch, collate_fn_map=default_collate_fn_map)
        worker_id = info.id
        pool = self._pool.get_or_set(lambda: _WorkerPool(self.table, worker_id))

        def stack_tensors(items: list[torch.Tensor], *, collate_fn_map: Any = None) -> torch.Tensor:
            first = items[0]
            if (
                first.element_size() * first.numel() * len(items) >= _MIN_POOLED_BYTES
                and all(t.shape == first.shape and t.dtype == first.dtype for t in items)
                and first.device.type == "cpu"
            ):
                stacked = pool.stack(items)
                if stacked is not None:
                    return stacked
            return default_collate_fn_map[torch.Tensor](items, collate_fn_map=collate_fn_map)

        return collate(batch, collate_fn_map={**default_collate_fn_map, torch.Tensor: stack_tensors})

    def watch(self, batch: Any) -> None:
        """Main process: free each pooled slot of ``batch`` once nothing views it any more."""
        for tensor in _tensors(batch):
            storage = tensor.untyped_storage()
            if storage.nbytes() < _HEADER + _MIN_POOLED_BYTES or not storage.is_shared():
                continue
            magic, token, worker, slot = torch.empty(0, dtype=torch.int64).set_(storage, 0, (4,)).tolist()
            if magic == _MAGIC and 0 <= worker < self.table.shape[0] and 0 <= slot < self.table.shape[1]:
                weakref.finalize(storage, _release, self.table, worker, slot, token).atexit = False


def _release(table: torch.Tensor, worker: int, slot: int, token: int) -> None:
    # Only the batch that took the slot may free it (a slot reused by a restarted worker has a new token).
    if int(table[worker, slot]) == token:
        table[worker, slot] = 0


def _tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, dict):
        return [t for v in batch.values() for t in _tensors(v)]
    if isinstance(batch, (list, tuple)):
        return [t for v in batch for t in _tensors(v)]
    return []
