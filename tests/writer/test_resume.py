"""Crash and rerun: a SIGKILLed worker, or the whole job killed; the rerun continues from the workers'
checkpoints and the dataset equals an uninterrupted run's, chunk for chunk."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import subprocess_env
from support.writer import calls, chunk_files, kill_once, read_samples, sample, slow_sample

from lit_streaming_writer import DatasetExistsError, WorkerError, optimize


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
        import functools
        from support.writer import slow_sample
        from lit_streaming_writer import optimize

        if __name__ == "__main__":
            fn = functools.partial(slow_sample, log={str(log)!r})
            optimize(fn, range(600), {str(out)!r}, chunk_size=5, num_workers=2)
        """)
    )
    job = subprocess.Popen(
        [sys.executable, str(script)], env=subprocess_env(), start_new_session=True, stderr=subprocess.DEVNULL
    )
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


# ---- a hung fn (issue 12 item 9): ``timeout`` bounds the time a worker makes no progress -----------------------
def hang_at(i: int, at: int, release: str) -> dict:
    """``sample(i)``, except that input ``at`` blocks until the file ``release`` exists (at most 120 s)."""
    if i == at:
        deadline = time.monotonic() + 120
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
    return sample(i)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_hung_fn_fails_the_job_naming_the_input(tmp_path, workers):
    release = tmp_path / "release"
    fn = functools.partial(hang_at, at=13, release=str(release))
    timeout = 3.0 if workers == 1 else 10.0  # launched workers must also meet within it
    start = time.monotonic()
    try:
        with pytest.raises(
            WorkerError, match=r"made no progress for \d+s \(the timeout\).*input #13 \(13\)"
        ) as info:
            optimize(fn, range(20), str(tmp_path / "out"), chunk_size=2, num_workers=workers, timeout=timeout)
        assert time.monotonic() - start < timeout + 30
        assert info.value.index == 13
        assert not (tmp_path / "out" / "index.json").exists()
    finally:
        release.touch()  # let the abandoned call return
    optimize(sample, range(20), str(tmp_path / "out"), chunk_size=2, num_workers=workers)  # rerun resumes
    assert read_samples(tmp_path / "out") == [sample(i) for i in range(20)]


def test_slow_inputs_that_keep_progressing_are_not_a_stall(tmp_path):
    fn = functools.partial(slow_sample, log=str(tmp_path / "log"))
    optimize(fn, range(40), str(tmp_path / "out"), chunk_size=5, num_workers=1, timeout=1.0)
    assert read_samples(tmp_path / "out") == [sample(i) for i in range(40)]


def test_a_killed_checkpoint_write_leaves_no_temp_file_in_the_finished_dataset(tmp_path):
    out = tmp_path / "out"
    fn = functools.partial(kill_once, at=15, marker=str(tmp_path / "killed"), log=str(tmp_path / "log"))
    with pytest.raises(WorkerError):
        optimize(fn, range(20), str(out), chunk_size=2, num_workers=2)
    (out / "1.index.json.tmp-4242").write_text('{"half": ')  # a checkpoint write killed midway
    (out / "0.index.json.tmp-99").write_text("")
    optimize(fn, range(20), str(out), chunk_size=2, num_workers=2)
    assert read_samples(out) == [sample(i) for i in range(20)]
    assert sorted(os.listdir(out)) == sorted([*chunk_files(out), "index.json"])


# ---- a rerun of a call that already finished (issue 12 items 10 and 11) ------------------------------------------
def _shutdown_killed_after_publishing(out: Path, ranks: int) -> None:
    """What a kill in the shutdown window leaves: the published index.json and the ranks' final checkpoints
    (finish deletes those last)."""
    index = json.loads((out / "index.json").read_text())
    for rank in range(ranks):
        (out / f"{rank}.index.json").write_text(json.dumps({"chunks": [], "config": index["config"]}))


def test_rerunning_a_finished_append_does_not_append_again(tmp_path):
    out = tmp_path / "out"
    optimize(sample, range(200), str(out), chunk_size=5, num_workers=2)
    optimize(sample, range(200, 300), str(out), chunk_size=5, num_workers=2, mode="append")
    _shutdown_killed_after_publishing(out, 2)
    before = chunk_files(out)
    optimize(
        sample, range(200, 300), str(out), chunk_size=5, num_workers=2, mode="append"
    )  # as the README says
    assert read_samples(out) == [sample(i) for i in range(300)]  # 300, none twice
    assert chunk_files(out) == before
    assert sorted(os.listdir(out)) == sorted([*chunk_files(out), "index.json"])
    optimize(
        sample, range(300, 310), str(out), chunk_size=5, num_workers=2, mode="append"
    )  # a new call appends
    assert read_samples(out) == [sample(i) for i in range(310)]


def test_rerunning_a_finished_job_reports_success(tmp_path):
    out = tmp_path / "out"
    assert optimize(sample, range(50), str(out), chunk_size=5, num_workers=2) == str(out)
    _shutdown_killed_after_publishing(out, 2)
    assert optimize(sample, range(50), str(out), chunk_size=5, num_workers=2) == str(
        out
    )  # no DatasetExistsError
    assert read_samples(out) == [sample(i) for i in range(50)]
    assert sorted(os.listdir(out)) == sorted([*chunk_files(out), "index.json"])
    with pytest.raises(DatasetExistsError):  # another call still may not write over it
        optimize(sample, range(60), str(out), chunk_size=5, num_workers=2)


class Tagged:
    """A callable object: two instances with other tags are other jobs, though their code is the same."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __call__(self, i: int) -> dict:
        return {"i": i, "tag": self.tag}


def test_calls_differing_only_in_a_callable_objects_state_are_different_jobs(tmp_path):
    out = tmp_path / "out"
    optimize(Tagged("a"), range(10), str(out), chunk_size=4, num_workers=1)
    optimize(Tagged("b"), range(10), str(out), chunk_size=4, num_workers=1, mode="overwrite")
    assert read_samples(out) == [{"i": i, "tag": "b"} for i in range(10)]
    optimize(lambda i: {"i": i * 2}, range(5), str(out), chunk_size=4, num_workers=1, mode="overwrite")
    optimize(lambda i: {"i": i * 3}, range(5), str(out), chunk_size=4, num_workers=1, mode="overwrite")
    assert read_samples(out) == [{"i": i * 3} for i in range(5)]
