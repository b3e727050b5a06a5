"""Errors a writing job reports. Both survive pickling, so they cross process boundaries with their fields."""

from __future__ import annotations

from lit_streaming.errors import LitStreamingError


class InputError(RuntimeError, LitStreamingError):
    """``fn`` (or storing what it produced) failed on one input; the message names the input."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.index)


class WorkerError(RuntimeError, LitStreamingError):
    """A worker failed and the whole job stopped without publishing a result.

    ``rank`` is the failing worker's rank and ``index`` the failing input's position in ``inputs`` when the
    failure came from one input; the message holds the worker's traceback.
    """

    def __init__(self, message: str, rank: int | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.rank = rank
        self.index = index

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.rank, self.index)


def describe_input(index: int, item: object, limit: int = 120) -> str:
    """``input #index (repr)``, with the repr cut short: names the input in error messages."""
    text = repr(item)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"input #{index} ({text})"
