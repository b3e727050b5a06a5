"""Timing of a loader over epochs, and the memory of a process tree sampled from /proc."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any


def stream(
    make_loader: Callable[[], Any], epochs: int, count: Callable[[Any], int], warmup: int
) -> dict[str, Any]:
    """Iterate ``epochs`` epochs of ``make_loader()``'s loader and time them.

    Steady-state rate: per epoch, the clock starts when batch ``warmup`` (1-based) arrives and stops when the
    last batch arrives; only the items of the batches after the warm-up count. This leaves out loader
    construction, worker start-up and the first fetches of every epoch (and the workers' shutdown at the
    end). Wall rate: every item over the whole time from constructing the loader to the last batch.
    CPU rate: the steady-state items per CPU-second used by this process and its descendants (workers,
    their children) from the end of the warm-up to the end of the epoch (read from /proc when batch
    ``warmup`` arrives and after the epoch, when the workers have been reaped and their CPU time is in this
    process's children's time); it hardly moves when other work shares the machine, unlike wall-clock rates.
    """
    t0 = time.perf_counter()
    loader = make_loader()
    built = time.perf_counter() - t0
    epochs_out = []
    first_batch = None
    me = os.getpid()
    for _ in range(epochs):
        start = time.perf_counter()
        items = steady_items = batches = 0
        t_warm = t_last = first = cpu_warm = None
        for k, batch in enumerate(loader):
            n = count(batch)
            now = time.perf_counter()
            if k == 0:
                first = now - start
                first_batch = batch if first_batch is None else first_batch
            items += n
            batches += 1
            if k == warmup - 1:
                t_warm = now
                cpu_warm = tree_cpu_seconds(me)
            elif k >= warmup:
                steady_items += n
            t_last = now
        cpu = tree_cpu_seconds(me) - cpu_warm if cpu_warm is not None and steady_items else None
        epochs_out.append(
            dict(
                items=items,
                batches=batches,
                seconds=(t_last or start) - start,
                first_batch_s=first,
                steady_items=steady_items,
                steady_seconds=(t_last - t_warm) if t_warm is not None and steady_items else None,
                cpu_items=steady_items if cpu else 0,
                cpu_seconds=cpu,
            )
        )
        t_end = t_last or time.perf_counter()
    total = t_end - t0
    items = sum(e["items"] for e in epochs_out)
    steady = [e for e in epochs_out if e["steady_seconds"]]
    steady_seconds = sum(e["steady_seconds"] for e in steady)
    timed = [e for e in epochs_out if e["cpu_seconds"]]
    cpu_seconds = sum(e["cpu_seconds"] for e in timed)
    return dict(
        items=items,
        wall_seconds=total,
        wall_rate=items / total if total > 0 else None,
        steady_rate=sum(e["steady_items"] for e in steady) / steady_seconds if steady_seconds else None,
        cpu_rate=sum(e["cpu_items"] for e in timed) / cpu_seconds if cpu_seconds else None,
        build_seconds=built,
        epochs=epochs_out,
        first_batch=first_batch,
    )


# ---- CPU time ----------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rfind(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live descendants, plus what their reaped children used.

    For this process itself (and its reaped children) getrusage gives microseconds; /proc counts clock ticks
    (10 ms), too coarse for a loader that streams an epoch in a few ticks of its own process."""
    me = pid == os.getpid()
    total = 0
    for p in tree(pid):
        if me and p == pid:
            continue
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / _TICK + (own_cpu_seconds() if me else 0.0)


def machine_busy_seconds() -> float:
    """CPU-seconds all processors spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def own_cpu_seconds() -> float:
    """CPU used by this process (all threads) and its reaped children."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


# ---- memory of a process tree -----------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


HAVE_ROLLUP = os.path.exists("/proc/self/smaps_rollup")


MEMORY_FIELDS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Uss", "Rss")


def process_memory(pid: int) -> dict[str, int]:
    """Bytes of one process: PSS (and its anonymous / file-backed / shared-memory parts), USS, RSS. Without
    smaps_rollup only ``Rss`` (from /proc/PID/status) is known."""
    values: dict[str, int] = {}
    if HAVE_ROLLUP:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    values[parts[0][:-1]] = int(parts[1]) * 1024
        values["Uss"] = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    else:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    values["Rss"] = int(line.split()[1]) * 1024
    return {k: values.get(k, 0) for k in MEMORY_FIELDS}


def system_shmem() -> int:
    """Bytes of shared memory in use on the machine (/proc/meminfo ``Shmem``), 0 where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Shmem:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeMemorySampler:
    """Samples the summed memory of ``pid`` and its descendants every ``interval`` seconds in a thread.

    PSS (proportional set size, from /proc/PID/smaps_rollup) splits each shared page between the processes
    that map it, so the sum over the tree counts shared pages (fork-inherited torch, shared-memory batches)
    once. It includes file-backed pages mapped into the processes (mmap'd chunks in the page cache, shared
    libraries): the peak's breakdown into anonymous, file-backed and shared-memory PSS is kept, and the summed
    RSS, which double-counts shared pages, for reference.

    PSS counts only mapped pages: a batch segment that a worker has sent and unmapped, and the main process has
    not mapped yet, is in no process's PSS although it holds memory. The machine's shared memory in use above
    its level at the start (``Shmem`` in /proc/meminfo; other processes' changes included) counts those too.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak: dict[str, int] = {k: 0 for k in MEMORY_FIELDS}
        self.at_peak: dict[str, int] = {}
        self.peak_processes = 0
        self.samples = 0
        self._shmem_base = system_shmem()
        self.peak_shmem = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        mb = {k: v / 1e6 for k, v in self.peak.items()}
        return dict(
            metric="PSS" if HAVE_ROLLUP else "RSS",
            peak_mb=mb["Pss"] if HAVE_ROLLUP else mb["Rss"],
            peak_pss_mb=mb["Pss"] if HAVE_ROLLUP else None,
            peak_uss_mb=mb["Uss"] if HAVE_ROLLUP else None,
            peak_rss_sum_mb=mb["Rss"],
            at_peak_mb={k: v / 1e6 for k, v in self.at_peak.items()},
            peak_processes=self.peak_processes,
            peak_system_shmem_mb=self.peak_shmem / 1e6,
            samples=self.samples,
            interval_s=self.interval,
        )

    def _run(self) -> None:
        key = "Pss" if HAVE_ROLLUP else "Rss"
        while not self._stop.is_set():
            total = {k: 0 for k in MEMORY_FIELDS}
            pids = tree(self.pid)
            for p in pids:
                try:
                    for k, v in process_memory(p).items():
                        total[k] += v
                except (OSError, ValueError):
                    continue
            if total[key] >= self.peak[key]:
                self.at_peak = total
            self.peak = {k: max(self.peak[k], total[k]) for k in MEMORY_FIELDS}
            self.peak_processes = max(self.peak_processes, len(pids))
            self.peak_shmem = max(self.peak_shmem, system_shmem() - self._shmem_base)
            self.samples += 1
            self._stop.wait(self.interval)
