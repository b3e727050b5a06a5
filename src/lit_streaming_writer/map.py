"""``map``: run a function that writes files for each input; they land in ``output_dir`` at the same paths."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

from lit_streaming_writer import launch
from lit_streaming_writer.checkpoint import Checkpointer, fingerprint
from lit_streaming_writer.coordinate import Progress
from lit_streaming_writer.errors import InputError, describe_input
from lit_streaming_writer.output import Output

# Checkpoints and, for local outputs, the workers' staging folders (same file system: publishing is a rename).
# Removed once every worker succeeded.
WORK_FOLDER = ".lit-streaming-map"
_CHECKPOINT_NAME = re.compile(r"^(\d+)\.json$")


def map(
    fn: Callable[[Any, str], None],
    inputs: Sequence[Any],
    output_dir: str,
    num_workers: int | None = None,
    num_nodes: int | None = None,
    error_when_not_empty: bool = False,
    storage_options: dict[str, Any] | None = None,
    timeout: float = 1800.0,
) -> None:
    """Call ``fn(input, folder)`` for every input; the files it writes under ``folder`` (a local folder of the
    worker) are published to ``output_dir`` (local or an fsspec URL) at the same relative paths.

    Workers are launched or found as for ``optimize`` (see ``lit_streaming_writer.launch``); each worker takes
    a contiguous share of the inputs. An input's files are published right after ``fn`` returns, so a failing
    input publishes nothing. After a crash, rerunning the same call skips the inputs whose files were
    published and checkpointed (redone inputs overwrite their files). Files already in ``output_dir`` are kept
    or overwritten; ``error_when_not_empty=True`` refuses a non-empty ``output_dir`` instead, unless it only
    holds an interrupted run to resume. When two inputs write the same path, the last one published wins.
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be callable, got {type(fn).__name__}")
    inputs = inputs if isinstance(inputs, Sequence) else list(inputs)
    if len(inputs) == 0:
        raise ValueError("`inputs` is empty: nothing to map")
    launch.run(
        _MapJob(fn, inputs, Output(output_dir, storage_options), error_when_not_empty),
        num_workers,
        num_nodes,
        timeout,
    )


class _MapJob:
    desc = "map"

    def __init__(self, fn: Callable, inputs: Sequence[Any], out: Output, error_when_not_empty: bool) -> None:
        self.fn = fn
        self.inputs = inputs
        self.out = out
        self.error_when_not_empty = error_when_not_empty
        self.total = len(inputs)

    def prepare(self, world_size: int) -> None:
        self.out.ensure()
        if self.error_when_not_empty and self.out.entries() not in ([], [WORK_FOLDER]):
            raise FileExistsError(f"{self.out.url} is not empty (error_when_not_empty=True)")
        ranks = {n: _CHECKPOINT_NAME.match(n) for n in self.out.names(WORK_FOLDER)}
        self.out.remove(
            [f"{WORK_FOLDER}/{n}" for n, m in ranks.items() if m and int(m.group(1)) >= world_size]
        )

    def run(self, rank: int, world_size: int, plan: None, progress: Progress) -> None:
        start, end = launch.shard_bounds(self.total, world_size)[rank]
        key = {"rank": rank, "world_size": world_size, "total": self.total}
        checkpointer = Checkpointer(
            self.out, f"{WORK_FOLDER}/{rank}.json", fingerprint(key, self.fn, self.inputs, start, end)
        )
        resumed = checkpointer.load()
        first = int(resumed[1]["next_input"]) if resumed else start
        stage, temporary = self.out.staging_dir(f"{WORK_FOLDER}/staging-{rank}")
        shutil.rmtree(stage)  # files of an input interrupted before it was published
        os.makedirs(stage)
        try:
            progress.advance(first - start)
            for i in range(first, end):
                try:
                    self.fn(self.inputs[i], stage)
                except Exception as err:
                    where = describe_input(i, self.inputs[i])
                    raise InputError(f"fn failed on {where}: {type(err).__name__}: {err}", i) from err
                self._publish(stage)
                progress.advance()
                if checkpointer.due():
                    checkpointer.save({}, {"next_input": i + 1})
            checkpointer.save({}, {"next_input": end})
        finally:
            if temporary:
                shutil.rmtree(stage, ignore_errors=True)

    def _publish(self, stage: str) -> None:
        for folder, _, files in sorted(os.walk(stage)):
            for name in sorted(files):
                path = os.path.join(folder, name)
                self.out.publish(path, os.path.relpath(path, stage).replace(os.sep, "/"))

    def finish(self, plan: None, parts: list[None]) -> None:
        self.out.remove_folder(WORK_FOLDER)
