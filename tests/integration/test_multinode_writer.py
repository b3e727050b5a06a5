"""Two-node writing jobs on 127.0.0.1, two launcher processes with node ranks 0 and 1:

- ``fabric run --num-nodes=2`` (torchrun underneath): the script's optimize/map calls find the world and
  use it, creating a process group of their own and removing it afterwards;
- plain processes with Lightning's MASTER_ADDR / MASTER_PORT / NODE_RANK and ``num_nodes=2``: optimize/map
  launch their workers with Fabric on each node.

Both write one dataset that reads back complete, in input order, and chunk for chunk equal to a one-machine
run with as many workers. This file is also the script the launchers run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from lit_streaming import StreamingDataset
from lit_streaming_writer import map, optimize

N = 40


def make(i: int):
    for k in range(i % 3 + 1):  # uneven sample counts: chunks cut inside inputs
        yield {"id": i, "k": k}


def write(i: int, folder: str) -> None:
    Path(folder, f"node-files-{i % 2}").mkdir(exist_ok=True)
    Path(folder, f"node-files-{i % 2}", f"{i}.txt").write_text(str(i))


def main(style: str, out: str) -> None:
    counts = {"num_workers": 1, "num_nodes": 2} if style == "launched" else {}
    assert not dist.is_initialized()
    optimize(make, range(N), os.path.join(out, "data"), chunk_size=4, timeout=120, **counts)
    map(write, range(N), os.path.join(out, "files"), timeout=120, **counts)
    assert not dist.is_initialized()  # the process group made for the job is gone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(style: str, node: int, port: int, out: Path) -> list[str]:
    if style == "fabric-run":
        return [
            str(Path(sys.executable).parent / "fabric"),  # Lightning's CLI, next to this interpreter
            "run",
            "--accelerator=cpu",
            "--devices=1",
            "--num-nodes=2",
            f"--node-rank={node}",
            "--main-address=127.0.0.1",
            f"--main-port={port}",
            __file__,
            style,
            str(out),
        ]
    return [sys.executable, __file__, style, str(out)]


@pytest.mark.parametrize("style", ["fabric-run", "launched"])
def test_two_nodes_write_one_dataset(tmp_path, style):
    port = _free_port()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    nodes = [
        subprocess.Popen(
            _command(style, node, port, tmp_path),
            env=dict(env, NODE_RANK=str(node)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a process group per node: a timeout kills the node's workers too
        )
        for node in (0, 1)
    ]
    for node in nodes:
        try:
            output, _ = node.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for other in nodes:
                os.killpg(other.pid, signal.SIGKILL)
            output, _ = node.communicate()
        assert node.returncode == 0, output

    ds = StreamingDataset(str(tmp_path / "data"))
    assert [ds[i] for i in range(len(ds))] == [s for i in range(N) for s in make(i)]
    optimize(make, range(N), str(tmp_path / "one-machine"), chunk_size=4, num_workers=2)
    assert _chunks(tmp_path / "data") == _chunks(tmp_path / "one-machine")
    files = sorted(str(p.relative_to(tmp_path / "files")) for p in (tmp_path / "files").rglob("*.txt"))
    assert files == sorted(f"node-files-{i % 2}/{i}.txt" for i in range(N))
    assert sorted(os.listdir(tmp_path / "files")) == ["node-files-0", "node-files-1"]


def _chunks(path: Path) -> dict[str, bytes]:
    """Every chunk by name, in index order, with its bytes: equal dicts mean equal datasets."""
    index = json.loads((path / "index.json").read_text())
    return {c["filename"]: (path / c["filename"]).read_bytes() for c in index["chunks"]}


if __name__ == "__main__":
    main(*sys.argv[1:])
