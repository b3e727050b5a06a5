"""Every example script runs to completion on its small local data (each checks its own results and exits
non-zero when they are wrong). They run as subprocesses, as a user runs them, two at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = {
    "optimize_images.py": "my_optimized_dataset/index.json",
    "stream_dataset.py": "stream_dataset/index.json",
    "transforms.py": "images/index.json",
    "combined_tokens.py": "starcoder/index.json",
    "pause_resume.py": "dataloader_state.pt",
    "optimize_generator.py": "from_generator/index.json",
    "max_cache_size.py": "cache",
    "lightning_train.py": "checkpoints/last.ckpt",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run all examples once, two at a time (most of each run is interpreter and import start-up)."""
    root = tmp_path_factory.mktemp("examples")
    env = dict(os.environ, PYTHONWARNINGS="ignore")

    def run(name: str) -> tuple[subprocess.CompletedProcess, Path]:
        workdir = root / Path(name).stem
        cmd = [sys.executable, str(EXAMPLES_DIR / name), str(workdir)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=root), workdir

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(EXAMPLES, pool.map(run, EXAMPLES)))


def test_examples_are_listed():
    mine = {p.name for p in EXAMPLES_DIR.glob("*.py")}
    assert set(EXAMPLES) <= mine


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs(runs, name):
    done, workdir = runs[name]
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert (workdir / EXAMPLES[name]).exists()
    assert done.stdout.strip(), f"{name} printed nothing"
