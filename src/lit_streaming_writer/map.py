"""``map``: run a function that writes files for each input; they land in ``output_dir`` at the same paths."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

from lit_streaming.errors import LitStreamingTypeError
from lit_streaming_writer import compat, launch
from lit_streaming_writer import inputs as inputs_module
from lit_streaming_writer.checkpoint import Checkpointer, fingerprint
from lit_streaming_writer.coordinate import Progress
from lit_streaming_writer.errors import InputError, describe_input
from lit_streaming_writer.output import Output

# Checkpoints and, for local outputs, the workers' staging folders (same file system: publishing is a rename).
# Removed once every worker succeeded.
WORK_FOLDER = ".lit-streaming-map"
_CHECKPOINT_NAME = re.compile(r"^(\d+)\.json$")


def map(
    fn: Callable[..., None],
    inputs: Sequence[Any],
    output_dir: str,
    input_dir: str | None = None,
    weights: Sequence[float] | None = None,
    num_workers: int | None = None,
    fast_dev_run: bool | int = False,
    num_nodes: int | None = None,
    machine: Any = None,
    num_downloaders: int | None = None,
    num_uploaders: int | None = None,
    reorder_files: bool = True,
    error_when_not_empty: bool = False,
    reader: Any = None,
    batch_size: int | None = None,
    start_method: str | None = None,
    optimize_dns: bool | None = None,
    storage_options: dict[str, Any] | None = None,
    keep_data_ordered: bool | None = None,
    broadcast_paths: bool = False,
    *,
    timeout: float = 1800.0,
) -> None:
    """Call ``fn(input, folder)`` for every input; the files it writes under ``folder`` (a local folder of the
    worker) are published to ``output_dir`` (local or an fsspec URL) at the same relative paths.

    The arguments are litdata 0.2.76's, in its order (README "Compatibility with LitData"). As in LitData,
    ``fn`` may declare ``is_last`` (True for the last input of the worker's share, so ``fn`` can flush what it
    buffered) and ``device`` (``"cuda:{rank % gpus}"``, or None without a GPU) and receives them as keywords.
    Inputs are split, grouped (``batch_size``), limited (``fast_dev_run``), read (``reader``) and downloaded
    from a remote ``input_dir`` as for ``optimize``.

    Workers are launched or found as for ``optimize`` (see ``lit_streaming_writer.launch``); each worker takes
    a contiguous share of the inputs. An input's files are published right after ``fn`` returns, so a failing
    input publishes nothing. After a crash, rerunning the same call skips the inputs whose files were
    published and checkpointed (redone inputs overwrite their files). Files already in ``output_dir`` are kept
    or overwritten; ``error_when_not_empty=True`` refuses a non-empty ``output_dir`` instead, unless it only
    holds an interrupted run to resume. When two inputs write the same path, the last one published wins.
    """
    if not callable(fn):
        raise LitStreamingTypeError(f"`fn` must be callable, got {type(fn).__name__}")
    work = compat.prepare_work(
        inputs=inputs,
        input_dir=input_dir,
        weights=weights,
        batch_size=batch_size,
        fast_dev_run=fast_dev_run,
        reader=reader,
        reorder_files=reorder_files,
        num_workers=num_workers,
        num_downloaders=num_downloaders,
        num_uploaders=num_uploaders,
        machine=machine,
        start_method=start_method,
        keep_data_ordered=keep_data_ordered,
        storage_options=storage_options,
        timeout=timeout,
        what="map",
    )
    num_workers = work.num_workers
    out = Output(compat.output_location(output_dir), storage_options)
    launch.run(
        _MapJob(fn, work, out, error_when_not_empty),
        num_workers,
        num_nodes,
        timeout,
        start_method=start_method,
    )


class _MapJob:
    desc = "map"

    def __init__(self, fn: Callable, work: compat.Work, out: Output, error_when_not_empty: bool) -> None:
        self.fn = fn
        self.work = work
        self.inputs = work.inputs
        self.out = out
        self.error_when_not_empty = error_when_not_empty
        self.total = work.total
        self.keywords = inputs_module.accepted_keywords(fn)

    def prepare(self, world_size: int) -> None:
        self.out.ensure()
        if self.error_when_not_empty and self.out.entries() not in ([], [WORK_FOLDER]):
            raise FileExistsError(f"{self.out.url} is not empty (error_when_not_empty=True)")
        ranks = {n: _CHECKPOINT_NAME.match(n) for n in self.out.names(WORK_FOLDER)}
        self.out.remove(
            [f"{WORK_FOLDER}/{n}" for n, m in ranks.items() if m and int(m.group(1)) >= world_size]
        )

    def run(self, rank: int, world_size: int, plan: None, progress: Progress) -> None:
        start, end = self.work.split.bounds(world_size)[rank]
        key = {"rank": rank, "world_size": world_size, "total": self.total, "bounds": [start, end]}
        checkpointer = Checkpointer(
            self.out, f"{WORK_FOLDER}/{rank}.json", fingerprint(key, self.fn, self.inputs, start, end)
        )
        resumed = checkpointer.load()
        first = int(resumed[1]["next_input"]) if resumed else start
        stage, temporary = self.out.staging_dir(f"{WORK_FOLDER}/staging-{rank}")
        shutil.rmtree(stage)  # files of an input interrupted before it was published
        os.makedirs(stage)
        kwargs: dict[str, Any] = {}
        if "device" in self.keywords:
            kwargs["device"] = _device(rank)
        try:
            progress.advance(first - start)
            for i, item in self.work.source.items(first, end):
                progress.working_on(i, item)  # named in the error if fn hangs on it past the timeout
                if "is_last" in self.keywords:
                    kwargs["is_last"] = i == end - 1
                try:
                    result = self.fn(item, stage, **kwargs)
                except Exception as err:
                    where = describe_input(i, item)
                    raise InputError(f"fn failed on {where}: {type(err).__name__}: {err}", i) from err
                if result is not None:
                    raise InputError(
                        f"map's fn returned {type(result).__name__} for {describe_input(i, item)}: it must "
                        "write files under its output folder and return None (optimize stores returned samples)",
                        i,
                    )
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


def _device(rank: int) -> str | None:
    """LitData's ``device`` for map functions: this worker's GPU, round-robin over the node's GPUs."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{rank % torch.cuda.device_count()}"
    return None
