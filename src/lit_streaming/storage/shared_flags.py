"""``SharedFlags``: one byte per chunk in an anonymous shared mapping, inherited by forked processes.

DataLoader workers are forked from the main process every epoch unless they are persistent, so a set kept in a
worker is lost when it ends: each epoch's workers would check every chunk's checksum again, and the first batch
of every epoch would wait for it. A flag set in this mapping by any worker is seen by the main process and by
every worker forked after it. Processes that do not fork from the owner (spawn, forkserver, another rank)
start with their own flags: nothing is shared with them, which only costs a repeated check.
"""

from __future__ import annotations

import mmap


class SharedFlags:
    """``len`` flags, all clear at first. Setting a flag is a single byte store, so concurrent setters of
    the same flag cannot corrupt anything."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._map = mmap.mmap(-1, max(1, length)) if length else None  # MAP_SHARED | MAP_ANONYMOUS

    def __contains__(self, index: int) -> bool:
        return self._map is not None and 0 <= index < self.length and self._map[index] == 1

    def add(self, index: int) -> None:
        if self._map is not None and 0 <= index < self.length:
            self._map[index] = 1

    def __getstate__(self) -> dict:
        return {"length": self.length}  # a pickled copy (spawned worker, another rank) starts clear

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["length"])
