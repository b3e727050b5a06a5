"""Who holds a cache file: owner ids written into marker file names, and whether they still live.

An owner id is ``<pid>-<start>@<host>``: ``start`` is the process's start time (clock ticks since boot, from
``/proc/<pid>/stat``), so a marker left by a dead process is not mistaken for a live one when the kernel hands
its pid to a new process. Where ``/proc`` is missing the id is ``<pid>@<host>`` and only the pid is checked.

A reader id is ``<owner>~<token>``: one process may run several readers of the same cache entry (two datasets
over one URL, or one URL twice in a ``CombinedStreamingDataset``), and each one's pins must be its own.

Markers of dead processes are how a crashed job's pins, reservations and half-downloaded files get cleaned up
without any daemon. A process on another host (a cache dir shared between containers) is never judged dead.
"""

from __future__ import annotations

import itertools
import os
import re
import socket

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
READER_SEP = "~"
_tokens = itertools.count()


def _host() -> str:
    return _UNSAFE.sub("_", socket.gethostname())


def process_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (field 22 of ``/proc/<pid>/stat``), or None
    where ``/proc`` is not available or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 and fields[19].isdigit() else None


_start_cache: dict[int, str | None] = {}


def current_owner() -> str:
    """This process's owner id (recomputed when the pid changes: a forked child is a new owner)."""
    pid = os.getpid()
    if pid not in _start_cache:
        _start_cache.clear()
        _start_cache[pid] = process_start(pid)
    start = _start_cache[pid]
    return f"{pid}-{start}@{_host()}" if start is not None else f"{pid}@{_host()}"


def new_reader_token() -> str:
    """A token unique among the readers of this process (a counter: no randomness, nothing global to seed)."""
    return f"r{next(_tokens)}"


def owner_of(marker_owner: str) -> str:
    """The process part of ``<owner>~<token>`` (markers without a token name just the process)."""
    return marker_owner.partition(READER_SEP)[0]


def owner_alive(owner: str) -> bool:
    """False only when ``owner`` is a process of this host that has exited (or whose pid now belongs to a
    process started at another time); True when in doubt."""
    ident, _, host = owner_of(owner).partition("@")
    pid_text, _, start = ident.partition("-")
    if host != _host() or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start:
        now = process_start(pid)
        if now is not None and now != start:
            return False  # the pid was reused by a newer process
    return True
