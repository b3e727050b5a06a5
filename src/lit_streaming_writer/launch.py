"""Runs one job function on several worker processes of this machine, with progress and fail-fast errors.

Processes come from an explicit multiprocessing context, never from changing the caller's global start method.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm


class WorkerError(RuntimeError):
    """A worker failed; carries the failing input and the original traceback."""


class Progress:
    """What a worker uses to report finished inputs (batched, so the queue is not a bottleneck)."""

    def __init__(self, q: Any) -> None:
        self._q = q
        self._pending = 0
        self._last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self._pending += n
        now = time.monotonic()
        if self._q is not None and now - self._last > 0.2:
            self.flush()
            self._last = now

    def flush(self) -> None:
        if self._q is not None and self._pending:
            self._q.put(("progress", self._pending))
            self._pending = 0


def _entry(job: Callable[[int, Progress], Any], rank: int, q: Any) -> None:
    progress = Progress(q)
    try:
        result = job(rank, progress)
        progress.flush()
        q.put(("done", rank, result))
    except BaseException as err:  # noqa: BLE001 - everything must reach the parent
        q.put(("error", rank, f"{type(err).__name__}: {err}", traceback.format_exc()))
        sys.exit(1)


def run_workers(
    job: Callable[[int, Progress], Any], num_workers: int, total: int, desc: str, timeout: float | None = None
) -> list[Any]:
    """Run ``job(rank, progress)`` for rank in 0..num_workers-1 and return the results in rank order.

    With one worker the job runs in this process (easy debugging, lambdas allowed). The first failure stops the
    other workers and raises ``WorkerError`` with the worker's traceback.
    """
    bar = tqdm(total=total, desc=desc, unit="item", disable=total == 0, smoothing=0.1)
    try:
        if num_workers <= 1:
            progress = Progress(None)
            progress.advance = lambda n=1: bar.update(n)  # type: ignore[method-assign]
            return [job(0, progress)]
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=_entry, args=(job, r, q), daemon=False) for r in range(num_workers)]
        for p in procs:
            p.start()
        results: dict[int, Any] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while len(results) < num_workers:
                try:
                    msg = q.get(timeout=1.0)
                except queue.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead and q.empty():
                        raise WorkerError(
                            f"Worker process {procs.index(dead[0])} died with exit code {dead[0].exitcode} "
                            "(killed? out of memory?)"
                        ) from None
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"{desc}: workers did not finish within {timeout} s") from None
                    continue
                if msg[0] == "progress":
                    bar.update(msg[1])
                elif msg[0] == "done":
                    results[msg[1]] = msg[2]
                else:
                    _, rank, summary, tb = msg
                    raise WorkerError(f"Worker {rank} failed: {summary}\n\nWorker traceback:\n{tb}")
        finally:
            for p in procs:
                if p.is_alive() and len(results) < num_workers:
                    p.terminate()
            for p in procs:
                p.join(timeout=30)
        return [results[r] for r in range(num_workers)]
    finally:
        bar.close()


def default_num_workers() -> int:
    return max(1, os.cpu_count() or 1)
