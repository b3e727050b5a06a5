"""One rank's part in a writing job, and how the ranks keep each other informed.

A job has three steps: rank 0 prepares the output (mode checks, cleanup), every rank writes its share, rank 0
merges the shares. Between steps the ranks exchange small objects over a gloo group. While they write, a
heartbeat thread on every rank all-reduces ``[inputs done, ranks finished, ranks failed]`` a few times a
second. That single collective gives rank 0 the progress of every worker on every node (its progress bar),
tells every rank within one beat that another failed (they stop), and ends once every rank is done. A rank
that dies closes its gloo connections, which the others notice at once; every collective is bounded by the
group's timeout. With a single rank there is no group and the same steps run in-process.

A rank that is alive but stuck (``fn`` hung on one input) would keep the heartbeat going forever, so the write
step runs in a thread of its own and the rank watches it: after ``stall_timeout`` seconds without progress (no
input finished or started) the rank reports a ``WorkerError`` naming the input and the job stops. The stuck
thread cannot be killed from Python; it is a daemon thread, gone when the worker process ends (with a single
in-process worker it lingers in the calling process until ``fn`` returns, and its result is dropped).
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
import traceback
from typing import Any, Protocol

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from lit_streaming.errors import LitStreamingError
from lit_streaming_writer.errors import WorkerError, describe_input

_BEAT_SECONDS = 0.25
Outcome = tuple[str, Any]  # ("ok", value) or ("error", exception)


class Progress:
    """Handed to a job's write step: counts finished inputs and stops the step once another rank failed."""

    def __init__(self, bar: tqdm | None) -> None:
        self.done = 0
        self.stop = threading.Event()
        self._bar = bar
        self.current: tuple[int, Any] | None = None  # (index, input) the step works on, when it says
        self.last_change = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.last_change = time.monotonic()
        if self._bar is not None:
            self._bar.update(n)
        if self.stop.is_set():
            raise Stopped

    def working_on(self, index: int, item: Any) -> None:
        """The step starts on input ``index``: named if it then makes no progress for ``stall_timeout``."""
        self.current = (index, item)
        self.last_change = time.monotonic()
        if self.stop.is_set():
            raise Stopped

    def idle_for(self) -> float:
        return time.monotonic() - self.last_change


class Stopped(LitStreamingError):
    """Another rank failed; this one stops quietly and lets that rank's error be reported."""


class Job(Protocol):
    desc: str
    total: int | None  # inputs to process; None when a queue feeds the workers (unknown in advance)

    def prepare(self, world_size: int) -> Any:
        """Rank 0, before anyone writes: check and clean the output; the result goes to every rank."""

    def run(self, rank: int, world_size: int, plan: Any, progress: Progress) -> Any:
        """Every rank: write this rank's share of the inputs; the result goes to rank 0."""

    def finish(self, plan: Any, parts: list[Any]) -> Any:
        """Rank 0, after every rank succeeded: merge the parts (in rank order) and publish."""


class _Heartbeat(threading.Thread):
    def __init__(self, group: Any, world_size: int, progress: Progress, bar: tqdm | None) -> None:
        super().__init__(name="lit-streaming-writer-heartbeat", daemon=True)
        self.group = group
        self.world_size = world_size
        self.progress = progress
        self.bar = bar
        self.error: BaseException | None = None
        self._finished = 0
        self._failed = 0
        self._wake = threading.Event()

    def finish(self, failed: bool) -> None:
        self._failed = int(failed)
        self._finished = 1
        self._wake.set()  # beat now: the last rank to finish ends the job at once, not a beat later

    def run(self) -> None:
        shown = 0
        try:
            while True:
                finished, failed = self._finished, self._failed  # read before `done`: then `done` is final
                beat = torch.tensor([self.progress.done, finished, failed], dtype=torch.int64)
                dist.all_reduce(beat, group=self.group)
                done, finished, failed = beat.tolist()
                if self.bar is not None:
                    self.bar.update(done - shown)
                    shown = done
                if failed:
                    self.progress.stop.set()
                if finished == self.world_size:
                    return
                self._wake.wait(_BEAT_SECONDS)  # once finished, beats follow the peers' pace
        except Exception as err:  # a peer died or timed out: no further collective can succeed
            self.error = err
            self.progress.stop.set()


def _own_bar_lock() -> None:
    """In a launched rank, give tqdm a lock of this process's own before drawing a bar.

    tqdm's default lock includes a semaphore shared by every process forked from one parent. A rank killed
    while its bar held it (a peer died and the launcher ended the job) left it held for good, and the next
    ``optimize`` from the same process hung in its first bar (seen in CI). Only the rank draws here, so a
    thread lock is all it needs. The user's own process keeps tqdm's lock.
    """
    if multiprocessing.parent_process() is not None:
        tqdm.set_lock(threading.RLock())


def run_rank(job: Job, rank: int, world_size: int, group: Any, stall_timeout: float | None = None) -> Outcome:
    """Run this rank's part of ``job``. Every rank returns the same outcome, unless a rank died.
    ``stall_timeout``: the longest the write step may go without progress (see the module docstring)."""
    bar = None
    try:
        plan = _broadcast(_attempt(job.prepare, world_size) if rank == 0 else None, group)
        if plan[0] == "error":
            return plan
        if rank == 0 and getattr(job, "verbose", True):  # once every rank is up: its rate measures the work
            _own_bar_lock()
            bar = tqdm(total=job.total, desc=job.desc, unit="input", smoothing=0.1)
        status = _write(job, rank, world_size, plan[1], group, bar, stall_timeout)
        if status[0] == "lost":
            return "error", status[1]
        statuses = _gather(status, rank, world_size, group)
        outcome = None
        if rank == 0:
            errors = [value for kind, value in statuses if kind == "error"]
            parts = [value for _, value in statuses]
            outcome = ("error", errors[0]) if errors else _attempt(job.finish, plan[1], parts)
        return _broadcast(outcome, group)
    except RuntimeError as err:  # only a collective can raise here (steps' errors are caught): a peer is gone
        return "error", _lost_contact(rank, err)
    finally:
        if bar is not None:
            bar.close()


def _write(
    job: Job,
    rank: int,
    world_size: int,
    plan: Any,
    group: Any,
    bar: tqdm | None,
    stall_timeout: float | None = None,
) -> Outcome:
    progress = Progress(bar if group is None else None)
    beat = _Heartbeat(group, world_size, progress, bar) if group is not None else None
    if beat is not None:
        beat.start()
    status = _run_watched(job, rank, world_size, plan, progress, stall_timeout)
    if beat is None:
        return status
    beat.finish(failed=status[0] == "error")
    beat.join()  # each beat is bounded by the group's timeout
    if beat.error is None:
        return status
    return "lost", status[1] if status[0] == "error" else _lost_contact(rank, beat.error)


def _run_watched(
    job: Job, rank: int, world_size: int, plan: Any, progress: Progress, stall_timeout: float | None
) -> Outcome:
    """``job.run`` in a daemon thread, abandoned with a ``WorkerError`` once it makes no progress for
    ``stall_timeout`` seconds."""
    box: list[Outcome] = []

    def step() -> None:
        try:
            box.append(("ok", job.run(rank, world_size, plan, progress)))
        except Stopped:
            box.append(("stopped", None))
        except Exception as err:
            box.append(("error", _worker_error(rank, err)))
        except (
            BaseException
        ) as err:  # KeyboardInterrupt/SystemExit raised inside fn: still this rank's failure
            box.append(("error", _worker_error(rank, err)))

    thread = threading.Thread(target=step, name=f"lit-streaming-writer-rank-{rank}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(_BEAT_SECONDS)
        if stall_timeout is not None and thread.is_alive() and progress.idle_for() > stall_timeout:
            progress.stop.set()  # should fn ever return, the step stops at its next input
            return "error", _stalled(rank, progress, stall_timeout)
    return box[0]


def _stalled(rank: int, progress: Progress, stall_timeout: float) -> WorkerError:
    if progress.current is None:
        where, index = "its current input", None
    else:
        index = progress.current[0]
        where = describe_input(index, progress.current[1])
    return WorkerError(
        f"Worker {rank} made no progress for {stall_timeout:g}s (the timeout): fn is still running on {where}. "
        "The job was stopped and no index was published; fix or skip that input and rerun the same call to "
        "resume, or pass a larger timeout.",
        rank,
        index,
    )


def _lost_contact(rank: int, err: BaseException) -> WorkerError:
    return WorkerError(
        f"Worker {rank} lost contact with the other workers ({err}); one probably crashed or timed out. No "
        "index was published; rerun the same call to resume from the workers' checkpoints.",
        rank,
    )


def _worker_error(rank: int, err: BaseException) -> WorkerError:
    details = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    error = WorkerError(
        f"Worker {rank} failed: {type(err).__name__}: {err}\n\nWorker traceback:\n{details}",
        rank,
        getattr(err, "index", None),
    )
    error.__cause__ = err
    return error


def _attempt(step: Any, *args: Any) -> Outcome:
    try:
        return "ok", step(*args)
    except Exception as err:
        return "error", _picklable(err)


def _picklable(err: Exception) -> Exception:
    """The error itself when it can travel to other ranks, else a RuntimeError with the same text."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")


def _broadcast(obj: Any, group: Any) -> Any:
    if group is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def _gather(obj: Any, rank: int, world_size: int, group: Any) -> list[Any]:
    if group is None:
        return [obj]
    out = [None] * world_size if rank == 0 else None
    dist.gather_object(obj, out, dst=0, group=group)
    return out or []
