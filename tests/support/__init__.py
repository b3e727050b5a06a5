"""Helpers shared by the tests, imported by name (``from support.storage import ...``): pytest puts tests/ on
``sys.path`` (``pythonpath`` in pyproject.toml). A test that runs Python in a subprocess passes
``subprocess_env()`` so that process, and the workers it spawns, import ``support`` the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
"""The tests/ folder: the ``sys.path`` entry that makes ``support`` importable."""


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment with tests/ first on ``PYTHONPATH``, plus ``extra``."""
    path = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **extra)
