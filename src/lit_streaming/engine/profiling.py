"""Chrome trace and cProfile output for ``StreamingDataLoader(profile_batches=..., profile_cprofile=...)``.

LitData's names and places: the trace is ``result.json`` (Chrome trace format; chrome://tracing and Perfetto open
it) in ``profile_dir``, else the working directory; ``profile_batches=True`` traces the whole run, an int N
traces N batches after ``profile_skip_batches``; ``profile_cprofile=True`` writes ``cprofile_main.prof``/``.txt``
(the main process) and ``cprofile_worker0.prof``/``.txt`` (worker 0). Each worker records its fetch (chunk
open/download) and decode spans for the samples of the traced batches into its own hidden file; the main process
records how long it waited for each batch and merges everything. A run of several epochs keeps every epoch's
events in the one file. Rank r > 0 writes ``result-rank{r}.json`` (LitData traces rank 0 only). Nothing in torch
is patched and no global profiler hook is installed for the trace.
"""

from __future__ import annotations

import cProfile
import glob
import json
import os
import pstats
import threading
import time
from dataclasses import dataclass
from typing import Any

TRACE_NAME = "result.json"
CPROFILE_MAIN = "cprofile_main"
CPROFILE_WORKER = "cprofile_worker0"


def now_us() -> float:
    return time.perf_counter_ns() / 1000.0


#: Events one process keeps (viztracer's default buffer is the same size): a whole-run trace of a long job keeps
#: its first spans and counts the rest instead of growing without bound.
MAX_EVENTS = 1_000_000


class TraceRecorder:
    """Collects complete ("X") events for one process, at most ``max_events`` (then counts the dropped)."""

    def __init__(self, process_name: str, max_events: int = MAX_EVENTS) -> None:
        self.pid = os.getpid()
        self.max_events = max_events
        self.dropped = 0
        self.events: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": self.pid, "tid": 0, "args": {"name": process_name}}
        ]

    def span(self, name: str, cat: str, start_us: float, end_us: float, **args: Any) -> None:
        if len(self.events) > self.max_events:
            self.dropped += 1
            return
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

    def all_events(self) -> list[dict[str, Any]]:
        """The events, with a ``dropped_events`` counter when the buffer filled."""
        if not self.dropped:
            return self.events
        note = {"ph": "C", "name": "dropped_events", "pid": self.pid, "tid": 0, "ts": now_us()}
        return [*self.events, {**note, "args": {"dropped": self.dropped}}]

    def dump(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.all_events(), f)
        os.replace(tmp, path)


@dataclass(frozen=True)
class WorkerProfile:
    """What a worker traces: batches [skip, skip + batches) of its iteration (``batches=None``: all from
    ``skip``), into hidden files under ``profile_dir``; ``cprofile``: worker 0 of rank 0 runs under cProfile."""

    profile_dir: str
    skip: int = 0
    batches: int | None = None
    cprofile: bool = False

    def traces(self, batch: int) -> bool:
        return batch >= self.skip and (self.batches is None or batch < self.skip + self.batches)

    def start_cprofile(self, rank: int, worker_id: int, num_workers: int) -> cProfile.Profile | None:
        # With num_workers=0 the main process's profiler already covers the reading.
        if not (self.cprofile and rank == 0 and worker_id == 0 and num_workers > 0):
            return None
        profiler = cProfile.Profile()
        profiler.enable()
        return profiler

    def stop_cprofile(self, profiler: cProfile.Profile | None, worker: bool) -> None:
        if profiler is not None:
            dump_cprofile(
                profiler, os.path.join(self.profile_dir, CPROFILE_WORKER if worker else CPROFILE_MAIN)
            )


def traced_range(skip: int, batches: int | None, total: int) -> range:
    """The batch numbers [skip, skip + batches) of an iteration of ``total`` batches (``None``: to the end)."""
    end = total if batches is None else min(total, skip + batches)
    return range(min(skip, end), end)


def dump_cprofile(profiler: cProfile.Profile, stem: str) -> None:
    """Write ``{stem}.prof`` (pstats/snakeviz) and ``{stem}.txt`` (top functions by self and cumulative time)."""
    profiler.disable()
    profiler.dump_stats(f"{stem}.prof")
    with open(f"{stem}.txt", "w", encoding="utf-8") as handle:
        stats = pstats.Stats(profiler, stream=handle)
        stats.strip_dirs()
        handle.write("--- tottime ---\n")
        stats.sort_stats("tottime").print_stats(40)
        handle.write("\n--- cumtime ---\n")
        stats.sort_stats("cumtime").print_stats(40)


def trace_path(profile_dir: str, rank: int) -> str:
    return os.path.join(profile_dir, TRACE_NAME if rank == 0 else f"result-rank{rank}.json")


def worker_trace_path(profile_dir: str, epoch: int, rank: int, worker_id: int) -> str:
    return os.path.join(profile_dir, f".worker-e{epoch}-r{rank}-w{worker_id}.json")


def collect(
    profile_dir: str, epoch: int, rank: int, expected_workers: int, timeout: float
) -> list[dict[str, Any]]:
    """Wait (bounded by ``timeout``) for ``expected_workers`` worker files of (epoch, rank), then read and remove
    the ones there."""
    pattern = os.path.join(profile_dir, f".worker-e{epoch}-r{rank}-w*.json")
    deadline = time.monotonic() + timeout
    while len(glob.glob(pattern)) < expected_workers and time.monotonic() < deadline:
        time.sleep(0.05)
    events: list[dict[str, Any]] = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            events.extend(json.load(f))
        os.remove(path)
    return events


def write_trace(path: str, events: list[dict[str, Any]]) -> str:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    os.replace(tmp, path)
    return path
