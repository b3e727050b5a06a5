"""A process-local set of open shards: each opened once by its format (mmap'd, or decompressed), kept in a
small LRU. It sits above storage and formats: storage gives a verified local path, the format a view."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from lit_streaming.formats.base import OpenedDataset
from lit_streaming.storage.source import DatasetSource


class OpenChunks:
    """Opens shard files lazily and keeps the last ``capacity`` of them.

    Files are mapped copy-on-write where the format allows, so samples can be zero-copy views that a transform
    may even modify in place without touching the file; dropping a shard from the LRU never invalidates a
    view still held by the user.
    """

    def __init__(self, source: DatasetSource, dataset: OpenedDataset, capacity: int = 8) -> None:
        self.source = source
        self.dataset = dataset
        self.capacity = max(1, capacity)
        self._open: OrderedDict[int, Any] = OrderedDict()

    def get(self, k: int) -> Any:
        view = self._open.get(k)
        if view is not None:
            self._open.move_to_end(k)
            return view
        while len(self._open) >= self.capacity:  # release first, so a reader never holds capacity + 1 shards
            old, _ = self._open.popitem(last=False)
            self.source.release(old)
        view = self._load(k)
        self._open[k] = view
        return view

    def clear(self) -> None:
        for k in list(self._open):
            self.source.release(k)
        self._open.clear()

    def _load(self, k: int) -> Any:
        path = self.source.chunk_path(k, self.dataset.table.shards[k])
        try:
            return self.dataset.open_shard(k, path)
        except BaseException:
            self.source.release(k)
            raise

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state
