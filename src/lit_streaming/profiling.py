"""Chrome trace recording for ``StreamingDataLoader(profile_batches=N)``.

Each worker records its fetch (chunk open/download) and decode spans for the samples of the first N batches and
writes them to its own file; the main process records how long it waited for each batch and merges everything
into one ``trace.json`` that chrome://tracing and Perfetto open. Nothing in torch is patched.
"""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from typing import Any


def now_us() -> float:
    return time.perf_counter_ns() / 1000.0


class TraceRecorder:
    """Collects complete ("X") events for one process."""

    def __init__(self, process_name: str) -> None:
        self.pid = os.getpid()
        self.events: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": self.pid, "tid": 0, "args": {"name": process_name}}
        ]

    def span(self, name: str, cat: str, start_us: float, end_us: float, **args: Any) -> None:
        self.events.append(
            {
                "ph": "X",
                "name": name,
                "cat": cat,
                "pid": self.pid,
                "tid": threading.get_ident() % 2**31,
                "ts": start_us,
                "dur": max(0.0, end_us - start_us),
                "args": args,
            }
        )

    def dump(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.events, f)
        os.replace(tmp, path)


def worker_trace_path(profile_dir: str, epoch: int, rank: int, worker_id: int) -> str:
    return os.path.join(profile_dir, f".worker-e{epoch}-r{rank}-w{worker_id}.json")


def merge(
    profile_dir: str, epoch: int, rank: int, main: TraceRecorder, expected_workers: int, timeout: float
) -> str:
    """Wait (bounded) for the workers' files, then write ``trace-rank{R}-epoch{E}.json`` and return its path."""
    pattern = os.path.join(profile_dir, f".worker-e{epoch}-r{rank}-w*.json")
    deadline = time.monotonic() + timeout
    while len(glob.glob(pattern)) < expected_workers and time.monotonic() < deadline:
        time.sleep(0.05)
    events = list(main.events)
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            events.extend(json.load(f))
        os.remove(path)
    out = os.path.join(profile_dir, f"trace-rank{rank}-epoch{epoch}.json")
    tmp = f"{out}.tmp"
    with open(tmp, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    os.replace(tmp, out)
    return out
