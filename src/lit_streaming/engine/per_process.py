"""State that belongs to one process: made lazily where it is used, never shared through fork or pickle.

Thread locks, fsspec clients, download pools and shared-memory slot tables must not be used by a process
they were not made in: a forked worker inherits its parent's (a lock may have been held mid-fork, a client
is bound to the parent's event loop) and an unpickled copy in another process would share none of them.
``PerProcess`` keeps the value with the pid that made it, so the holder sees nothing in any other process
and makes its own. Standard library only: the writer imports it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """A value for the process that set it. ``get()`` is None in any other process (after a fork, or in an
    unpickled copy: a ``PerProcess`` pickles empty), so the holder makes a fresh one there."""

    __slots__ = ("_pid", "_value")

    def __init__(self) -> None:
        self._value: T | None = None
        self._pid = -1

    def get(self) -> T | None:
        """The value, when this process set it; else None."""
        return self._value if self._pid == os.getpid() else None

    def set(self, value: T) -> T:
        """Make ``value`` this process's (replacing any other); returns it."""
        self._value, self._pid = value, os.getpid()
        return value

    def get_or_set(self, make: Callable[[], T]) -> T:
        """This process's value, made by ``make()`` the first time this process asks."""
        value = self.get()
        return self.set(make()) if value is None else value

    def inherited(self) -> T | None:
        """The value another process set (inherited through fork), else None."""
        return self._value if self._pid != os.getpid() else None

    def clear(self) -> None:
        self._value, self._pid = None, -1

    def __reduce__(self) -> tuple[Any, ...]:
        return (PerProcess, ())  # an empty one: the value stays with its process

    def __repr__(self) -> str:
        return f"PerProcess({self.get()!r})"
