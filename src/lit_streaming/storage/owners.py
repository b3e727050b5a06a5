"""Who holds a cache file: ``<pid>@<host>`` names written into marker file names, and whether they still live.

Markers of dead processes are how a crashed job's pins, reservations and half-downloaded files get cleaned up
without any daemon. A process on another host (a cache dir shared between containers) is never judged dead.
"""

from __future__ import annotations

import os
import re
import socket

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def current_owner() -> str:
    """This process's owner id (computed per call: a forked child has a new pid)."""
    return f"{os.getpid()}@{_UNSAFE.sub('_', socket.gethostname())}"


def owner_alive(owner: str) -> bool:
    pid_text, _, host = owner.partition("@")
    if host != _UNSAFE.sub("_", socket.gethostname()) or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
