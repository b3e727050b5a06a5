"""map: files written by fn in a worker-local folder are published to output_dir at the same relative paths."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from support.writer import calls, kill_once_map, write_files

from lit_streaming_writer import WorkerError, map


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _expected(n: int) -> dict[str, str]:
    return {f"part-{i % 3}/{i}.txt": f"input {i}\n" for i in range(n)}


@pytest.mark.parametrize("workers", [1, 2])
def test_map_publishes_files_at_their_paths(tmp_path, workers):
    assert map(write_files, range(20), str(tmp_path), num_workers=workers) is None
    assert _tree(tmp_path) == _expected(20)
    assert sorted(os.listdir(tmp_path)) == ["part-0", "part-1", "part-2"]  # no work folder left


def test_map_with_partial_keeps_existing_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    map(functools.partial(_write_scaled, scale=10), range(6), str(tmp_path), num_workers=2)
    assert _tree(tmp_path) == {"keep.txt": "mine", **{f"{i * 10}.bin": str(i) for i in range(6)}}


def _write_scaled(i: int, folder: str, scale: int) -> None:
    Path(folder, f"{i * scale}.bin").write_text(str(i))


def test_map_error_when_not_empty(tmp_path):
    (tmp_path / "x").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        map(write_files, range(3), str(tmp_path), error_when_not_empty=True)


def test_map_failing_fn_names_its_input(tmp_path):
    with pytest.raises(WorkerError, match=r"input #4 \(4\): ZeroDivisionError") as info:
        map(_fail_at_4, range(10), str(tmp_path), num_workers=2)
    assert info.value.index == 4
    assert not (tmp_path / "4.txt").exists()


def _fail_at_4(i: int, folder: str) -> None:
    Path(folder, f"{i}.txt").write_text("x")
    if i == 4:
        raise ZeroDivisionError("boom")


def test_map_resumes_after_a_killed_worker(tmp_path):
    out, log = tmp_path / "out", tmp_path / "log"
    fn = functools.partial(kill_once_map, at=25, marker=str(tmp_path / "killed"), log=str(log))
    with pytest.raises(WorkerError, match="died"):
        map(fn, range(30), str(out), num_workers=2)
    map(fn, range(30), str(out), num_workers=2)
    assert _tree(out) == _expected(30)
    seen = calls(log)
    assert seen[15] == 1 and seen[25] == 2  # rank 1 resumed after its checkpointed inputs
