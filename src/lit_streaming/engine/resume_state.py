"""The loader's saved position: its version, its shape, and the checks that refuse a state we cannot honour.

A state comes from a checkpoint file, maybe an old one, maybe edited by hand: every field is checked here so
that a bad state fails with :class:`ResumeError` naming the field, never with a ``KeyError`` deep in the loader
or, worse, a silently different sample order.
"""

from __future__ import annotations

from typing import Any

from lit_streaming.errors import LitStreamingError

#: Version 2: the lazy epoch plan (per-window shuffle keys, per-chunk subsample draws, block-drawn mixes).
STATE_VERSION = 2


class ResumeError(ValueError, LitStreamingError):
    """A saved loader state that cannot be continued exactly with the current settings."""


def _int(state: dict[str, Any], key: str, minimum: int) -> int:
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResumeError(f"Malformed loader state: `{key}` must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ResumeError(f"Malformed loader state: `{key}` must be >= {minimum}, got {value}")
    return value


def _chain(value: Any) -> list[list[int]]:
    if not isinstance(value, (list, tuple)):
        raise ResumeError(
            f"Malformed loader state: `resume_chain` must be a list, got {type(value).__name__}"
        )
    out = []
    for i, seg in enumerate(value):
        ok = isinstance(seg, (list, tuple)) and len(seg) == 2
        ok = ok and all(isinstance(x, int) and not isinstance(x, bool) for x in seg)
        if not ok or seg[0] < 1 or seg[1] < 0:
            raise ResumeError(
                f"Malformed loader state: `resume_chain[{i}]` must be [world_size >= 1, consumed >= 0], got {seg!r}"
            )
        out.append([int(seg[0]), int(seg[1])])
    return out


_FIELDS = (
    "version",
    "epoch",
    "consumed",
    "epoch_length",
    "started",
    "world_size",
    "num_workers",
    "batch_size",
)


def check_state(state: Any) -> dict[str, Any]:
    """``state`` validated (a new dict); :class:`ResumeError` naming the first bad field otherwise."""
    if not isinstance(state, dict):
        raise ResumeError(f"Malformed loader state: expected a dict, got {type(state).__name__}")
    for key in (*_FIELDS, "resume_chain", "settings", "cache_windows"):
        if key not in state:
            raise ResumeError(f"Malformed loader state: missing `{key}`")
    version = state["version"]
    if version != STATE_VERSION or isinstance(version, bool):
        raise ResumeError(
            f"Unsupported StreamingDataLoader state version {version!r} (this lit-streaming reads version "
            f"{STATE_VERSION}; older states describe a different sample order, so their epoch cannot be continued: "
            "start the epoch over)"
        )
    out = dict(state)
    for key, minimum in (("epoch", 0), ("consumed", 0), ("epoch_length", 0), ("world_size", 1)):
        out[key] = _int(state, key, minimum)
    out["num_workers"] = _int(state, "num_workers", 0)
    out["batch_size"] = _int(state, "batch_size", 1)
    if not isinstance(state["started"], bool):
        raise ResumeError(
            f"Malformed loader state: `started` must be a bool, got {type(state['started']).__name__}"
        )
    if out["consumed"] > out["epoch_length"]:
        raise ResumeError(
            f"Malformed loader state: `consumed` ({out['consumed']}) exceeds `epoch_length` ({out['epoch_length']})"
        )
    out["resume_chain"] = _chain(state["resume_chain"])
    windows = state["cache_windows"]
    if not isinstance(windows, list) or not all(type(w) is int and w >= 1 for w in windows):
        raise ResumeError(
            f"Malformed loader state: `cache_windows` must be a list of ints >= 1, got {windows!r}"
        )
    if not isinstance(state["settings"], dict):
        raise ResumeError(
            f"Malformed loader state: `settings` must be a dict, got {type(state['settings']).__name__}"
        )
    return out


def settings_diff(saved: Any, current: Any, path: str = "") -> str:
    """The first setting that differs, as ``path: saved X, now Y``."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current), key=str):
            if saved.get(key) != current.get(key):
                return settings_diff(saved.get(key), current.get(key), f"{path}.{key}" if path else str(key))
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for i, (a, b) in enumerate(zip(saved, current)):
            if a != b:
                return settings_diff(a, b, f"{path}[{i}]")
    return f"{path or 'value'}: saved {saved!r}, now {current!r}"
