"""A rank killed while its progress bar held tqdm's cross-process lock must not hang the next optimize."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, sys
    from tqdm.std import TqdmDefaultWriteLock
    from lit_streaming_writer import optimize

    def sample(i):
        return {"i": i}

    TqdmDefaultWriteLock()  # creates tqdm's semaphore, shared with every process forked from here
    child = multiprocessing.get_context("fork").Process(
        target=lambda: (TqdmDefaultWriteLock.mp_lock.acquire(), os._exit(0))
    )
    child.start()
    child.join()  # the semaphore is now held by a dead process, as after a rank killed mid-update
    optimize(sample, list(range(40)), sys.argv[1], chunk_size=5, num_workers=2)
    print("done")
    """
)


def test_optimize_after_a_rank_died_holding_the_progress_lock(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "out")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "done" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "out" / "index.json").exists()
