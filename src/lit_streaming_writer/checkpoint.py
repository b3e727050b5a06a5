"""Per-worker checkpoints: how far a worker got, so that rerunning the same call after a crash goes on there.

A checkpoint is saved only after the files it lists are published, so everything it names exists. Its
fingerprint covers what decides the worker's output (settings, ``fn``, the worker's inputs, rank and world
size): a checkpoint with another fingerprint belongs to another call and is ignored, and the worker starts its
share over. Saving costs a write or an upload, so a save is skipped while the previous one is recent compared
with how long it took: checkpoints take at most about a tenth of a worker's time, however small the chunks.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import marshal
import pickle
import time
from collections.abc import Callable, Sequence
from typing import Any

from lit_streaming_writer.output import Output

log = logging.getLogger(__name__)
_KEY = "checkpoint"
_COST_RATIO = 10.0


def fingerprint(settings: dict[str, Any], fn: Callable, inputs: Sequence[Any], start: int, end: int) -> str:
    """A digest of one worker's job. Inputs are hashed by their pickle (repr when they cannot be pickled)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(settings, sort_keys=True, default=repr).encode())
    h.update(_callable_key(fn))
    items = [inputs[i] for i in range(start, end)]
    try:  # one pickle of the whole share: 20,000 inputs hash in milliseconds instead of 0.3 s one by one
        h.update(pickle.dumps(items, protocol=4))
    except Exception:
        for item in items:
            data = _item_bytes(item)
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


def _item_bytes(item: Any) -> bytes:
    try:
        return pickle.dumps(item, protocol=4)
    except Exception:
        return repr(item).encode()


def _callable_key(fn: Callable) -> bytes:
    """What decides ``fn``'s behaviour, as bytes that are equal across processes and runs.

    Functions: name, compiled code (constants included: ``lambda i: i * 2`` is not ``lambda i: i * 3``),
    defaults and closure values. ``functools.partial``: the function and its bound arguments. Bound methods and
    callable objects (``Sample(size=200)``): the code of their method and the object's pickled state, so that
    two instances with other settings are two jobs. Parts that cannot be pickled are left out (a repr would
    hold a memory address and differ in every process).
    """
    if isinstance(fn, functools.partial):
        return _callable_key(fn.func) + _item_bytes((fn.args, sorted(fn.keywords.items())))
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}".encode()
    code = getattr(fn, "__code__", None)
    if code is not None:
        cells = [c.cell_contents for c in (getattr(fn, "__closure__", None) or ()) if _has_contents(c)]
        return name + _code_bytes(code) + _state_bytes((getattr(fn, "__defaults__", None), cells))
    owner = getattr(fn, "__self__", None)
    if owner is not None and hasattr(fn, "__func__"):  # a bound method
        return _callable_key(fn.__func__) + _state_bytes(owner)
    call_code = getattr(inspect.getattr_static(type(fn), "__call__", None), "__code__", None)
    return name + (_code_bytes(call_code) if call_code is not None else b"") + _state_bytes(fn)


def _code_bytes(code: Any) -> bytes:
    try:
        return marshal.dumps(code)
    except ValueError:
        return code.co_code


def _state_bytes(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=4)
    except Exception:
        return b""


def _has_contents(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True


class Checkpointer:
    """Loads and saves one worker's checkpoint file ``name`` in the output folder."""

    def __init__(self, out: Output, name: str, fingerprint: str) -> None:
        self.out = out
        self.name = name
        self.fingerprint = fingerprint
        self._last_save = float("-inf")
        self._last_cost = 0.0

    def load(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(document, progress)`` saved by an earlier run of this same job, or ``None``."""
        text = self.out.read_text(self.name)
        if text is None:
            return None
        try:
            doc = json.loads(text)
            progress = dict(doc.pop(_KEY))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("Ignoring unreadable checkpoint %s", self.out.path(self.name))
            return None
        if progress.pop("fingerprint", None) != self.fingerprint:
            log.warning(
                "Checkpoint %s belongs to a different call (other inputs, settings or fn); starting this "
                "worker's share over",
                self.out.path(self.name),
            )
            return None
        return doc, progress

    def due(self) -> bool:
        """Whether a save now keeps checkpointing within its share of the time (the first one always is)."""
        return time.monotonic() - self._last_save >= _COST_RATIO * self._last_cost

    def save(self, doc: dict[str, Any], progress: dict[str, Any]) -> None:
        started = time.monotonic()
        body = dict(doc)
        body[_KEY] = {"fingerprint": self.fingerprint, **progress}
        self.out.write_text(self.name, json.dumps(body, sort_keys=True))
        self._last_save = time.monotonic()
        self._last_cost = self._last_save - started
