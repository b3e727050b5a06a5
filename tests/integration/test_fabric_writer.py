"""optimize and map inside a Fabric script on the CPU: the script calls ``Fabric(strategy="ddp").launch()``,
which re-runs it for rank 1, so the process group exists when optimize is called; each rank writes its share
and rank 0 merges. The dataset equals a plain two-worker run, chunk for chunk. This file is also the script
the test runs. (``fabric run`` is covered by the two-node test.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

from lit_streaming import StreamingDataset
from lit_streaming_writer import map, optimize

N = 30


def make(i: int) -> dict:
    return {"id": i, "square": i * i}


def write(i: int, folder: str) -> None:
    Path(folder, f"{i}.txt").write_text(str(i))


def main(out: str) -> None:
    from lightning.fabric import Fabric

    Fabric(accelerator="cpu", devices=2, strategy="ddp").launch()
    data = os.path.join(out, "data")
    assert optimize(make, range(N), data, chunk_size=4, timeout=120) == data
    map(write, range(N), os.path.join(out, "files"), timeout=120)
    assert dist.is_initialized()  # Fabric's process group is left as found


def test_optimize_and_map_in_a_fabric_script(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK")}
    job = subprocess.Popen(
        [sys.executable, __file__, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills the ranks too
    )
    try:
        output, _ = job.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        output, _ = job.communicate()
    assert job.returncode == 0, output

    ds = StreamingDataset(str(tmp_path / "data"))
    assert [ds[i] for i in range(len(ds))] == [make(i) for i in range(N)]
    optimize(make, range(N), str(tmp_path / "plain"), chunk_size=4, num_workers=2)
    assert _chunks(tmp_path / "data") == _chunks(tmp_path / "plain")
    assert sorted(os.listdir(tmp_path / "files")) == sorted(f"{i}.txt" for i in range(N))


def _chunks(path: Path) -> dict[str, bytes]:
    index = json.loads((path / "index.json").read_text())
    return {c["filename"]: (path / c["filename"]).read_bytes() for c in index["chunks"]}


if __name__ == "__main__":
    main(*sys.argv[1:])
