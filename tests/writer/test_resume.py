"""Crash and rerun: a SIGKILLed worker, or the whole job killed; the rerun continues from the workers'
checkpoints and the dataset equals an uninterrupted run's, chunk for chunk."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _writer_helpers import calls, chunk_files, kill_once, read_samples, sample, slow_sample

from lit_streaming_writer import WorkerError, optimize

HERE = Path(__file__).parent


def test_sigkilled_worker_then_rerun_gives_the_clean_dataset(tmp_path):
    out, clean, log = tmp_path / "out", tmp_path / "clean", tmp_path / "calls.log"
    fn = functools.partial(kill_once, at=150, marker=str(tmp_path / "killed"), log=str(log))
    with pytest.raises(WorkerError, match="died"):
        optimize(fn, range(200), str(out), chunk_size=5, num_workers=2)
    assert not (out / "index.json").exists()
    assert (out / "1.index.json").exists()  # rank 1's checkpoint
    optimize(fn, range(200), str(out), chunk_size=5, num_workers=2)
    optimize(sample, range(200), str(clean), chunk_size=5, num_workers=2)
    assert read_samples(out) == [sample(i) for i in range(200)]
    assert chunk_files(out) == chunk_files(clean)
    assert sorted(os.listdir(out)) == sorted([*chunk_files(out), "index.json"])
    seen = calls(log)
    assert seen[100] == 1  # rank 1's first chunk was checkpointed before the kill: not redone
    assert seen[150] == 2


def test_rerun_with_other_inputs_starts_over(tmp_path):
    fn = functools.partial(kill_once, at=15, marker=str(tmp_path / "killed"), log=str(tmp_path / "log"))
    with pytest.raises(WorkerError):
        optimize(fn, range(20), str(tmp_path / "out"), chunk_size=2, num_workers=2)
    optimize(sample, range(100, 120), str(tmp_path / "out"), chunk_size=2, num_workers=2)
    assert read_samples(tmp_path / "out") == [sample(i) for i in range(100, 120)]


def test_whole_job_killed_then_rerun(tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import functools, sys
        sys.path.insert(0, {str(HERE)!r})
        from _writer_helpers import slow_sample
        from lit_streaming_writer import optimize

        if __name__ == "__main__":
            fn = functools.partial(slow_sample, log={str(log)!r})
            optimize(fn, range(600), {str(out)!r}, chunk_size=5, num_workers=2)
        """)
    )
    job = subprocess.Popen([sys.executable, str(script)], start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (log.exists() and _each_rank_did(calls(log), 30)):  # both past their first checkpoint
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before it could be killed"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=30)
    assert not (out / "index.json").exists()
    optimize(functools.partial(slow_sample, log=str(log)), range(600), str(out), chunk_size=5, num_workers=2)
    assert read_samples(out) == [sample(i) for i in range(600)]
    seen = calls(log)
    assert seen[0] == 1 and seen[300] == 1  # both ranks resumed instead of starting over


def _each_rank_did(seen: dict[int, int], n: int) -> bool:
    return sum(i < 300 for i in seen) >= n and sum(i >= 300 for i in seen) >= n
