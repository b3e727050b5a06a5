"""``optimize``: run a function over inputs and write what it returns as a chunked, streamable dataset."""

from __future__ import annotations

import hashlib
import os
import re
import types
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lit_streaming.errors import LitStreamingError, LitStreamingTypeError, LitStreamingValueError
from lit_streaming.format import compression as zstd
from lit_streaming.format.index import (
    INDEX_FILENAME,
    DatasetIndex,
    finished_jobs,
    merge_indexes,
    record_job,
)
from lit_streaming.format.units import parse_size
from lit_streaming_writer import compat, launch
from lit_streaming_writer.checkpoint import Checkpointer, fingerprint
from lit_streaming_writer.coordinate import Progress
from lit_streaming_writer.errors import InputError, describe_input
from lit_streaming_writer.output import Output
from lit_streaming_writer.rank_writer import RankWriter

_MODES = (None, "overwrite", "append")
_CHUNK_NAME = re.compile(r"^chunk-(\d+)-(\d+)(\.[a-z0-9:]+)?\.bin(\.tmp)?$")  # ".zstd:3": compression
_PARTIAL_NAME = re.compile(r"^(\d+)\.index\.json(\.tmp-\d+)?$")
_INDEX_TMP = re.compile(r"^index\.json\.tmp-\d+$")


class DatasetExistsError(FileExistsError, LitStreamingError):
    """output_dir already holds a dataset and no ``mode`` says what to do with it."""


def optimize(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any] | None = None,
    output_dir: str = "optimized_data",
    queue: Any = None,
    input_dir: str | None = None,
    weights: Sequence[float] | None = None,
    chunk_size: int | None = None,
    chunk_bytes: int | str | None = None,
    align_chunking: bool = False,
    compression: str | None = None,
    compression_level: str | None = None,
    compression_batch_size: int | None = None,
    encryption: Any = None,
    num_workers: int | None = None,
    fast_dev_run: bool | int = False,
    num_nodes: int | None = None,
    machine: Any = None,
    num_downloaders: int | None = None,
    num_uploaders: int | None = None,
    reorder_files: bool = True,
    reader: Any = None,
    batch_size: int | None = None,
    mode: str | None = None,
    use_checkpoint: bool = False,
    item_loader: Any = None,
    start_method: str | None = None,
    optimize_dns: bool | None = None,
    storage_options: dict[str, Any] | None = None,
    keep_data_ordered: bool | None = None,
    verbose: bool = True,
    broadcast_paths: bool = False,
    key_fn: Callable[[Any], Any] | None = None,
    *,
    timeout: float = 1800.0,
) -> str:
    """Apply ``fn`` to every input and write the samples to ``output_dir`` as chunks plus ``index.json``.

    The arguments are litdata 0.2.76's, in its order; README "Compatibility with LitData" lists what each does
    here. ``fn`` returns one sample, ``None`` (skip the input), or is a generator yielding many samples; when
    every input is skipped the result is an empty dataset (an index with no chunks), as with LitData.
    ``output_dir`` is a local folder (shared by all nodes when there are several) or an fsspec URL such as
    ``s3://bucket/prefix`` (``storage_options`` go to fsspec); chunks are uploaded as soon as they are
    written. Inputs naming files under a remote ``input_dir`` (given, or the folder of the first input's
    ``s3://...`` path) get those files downloaded first, ``num_downloaders`` threads per worker; ``fn`` sees
    local paths.

    Workers: see ``lit_streaming_writer.launch``. Inside a ``torchrun`` / ``fabric run`` / Fabric script
    every rank is a worker; otherwise ``num_workers`` processes per node (default: one per CPU) are launched
    with Fabric (``start_method``: ``"fork"``, the default, or ``"spawn"`` / ``"forkserver"``). Each worker
    takes a contiguous share of the inputs (balanced by ``weights``, by file sizes under a local ``input_dir``
    with ``reorder_files``, or whole chunks with ``align_chunking``) and the shares' chunks are listed in rank
    order, so the same inputs and workers always give the same samples in the same order (and chunks). A
    ``queue`` (a ``multiprocessing.Queue`` ended by putting ``None``) feeds the workers as items arrive instead;
    its order is then the order the workers took them.

    ``mode``: ``None`` refuses an existing dataset, ``"overwrite"`` replaces it, ``"append"`` adds chunks
    after the existing ones (same sample structure and settings required). ``index.json`` appears only when
    every worker succeeded. After a crash, rerunning the same call resumes from the workers' checkpoints and
    gives the same dataset, chunks included, as an uninterrupted run (a generator ``fn`` must yield the same
    samples for the same input); this is always on, whatever ``use_checkpoint`` says. ``timeout`` bounds, in
    seconds, every wait of one worker for the others (and for the next ``queue`` item), and the time a worker
    spends on one input (a hung ``fn`` fails the job with ``WorkerError`` naming the input). Rerunning a call
    that already finished (same fn, inputs, settings and mode; recorded in index.json) does nothing and
    returns, so a job killed while shutting down after publishing never appends twice. Returns
    ``output_dir``'s location (LitData returns None).
    """
    if not callable(fn):
        raise LitStreamingTypeError(f"`fn` must be callable, got {type(fn).__name__}")
    if (chunk_size is None) == (chunk_bytes is None):
        raise LitStreamingValueError(
            "Pass exactly one of `chunk_size` (items per chunk) or `chunk_bytes` (e.g. '64MB')"
        )
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0
    ):
        raise LitStreamingValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}")
    chunk_bytes = parse_size(chunk_bytes, "chunk_bytes")
    if mode not in _MODES:
        raise LitStreamingValueError(f"`mode` must be None, 'overwrite' or 'append', got {mode!r}")
    zstd.parse_compression(compression)
    if compression_level not in (None, "chunk"):
        raise LitStreamingValueError(
            f"`compression_level={compression_level!r}`: lit-streaming writes whole-chunk compression only "
            "(compression_level=None or 'chunk'); it reads LitData's 'batch' and 'sample' chunks"
        )
    if encryption is not None:
        raise LitStreamingValueError(
            "`encryption`: lit-streaming neither writes nor reads encrypted datasets; pass None"
        )
    if key_fn is not None:
        raise LitStreamingValueError(
            "`key_fn`: LitData's keys/ sidecar (dataset[key], dataset_update) is not supported; pass None"
        )
    if align_chunking and chunk_size is None:
        raise LitStreamingValueError(
            "`align_chunking=True` needs `chunk_size` (whole chunks of items per worker)"
        )
    work = compat.prepare_work(
        inputs=inputs,
        queue=queue,
        input_dir=input_dir,
        weights=weights,
        batch_size=batch_size,
        fast_dev_run=fast_dev_run,
        reader=reader,
        reorder_files=reorder_files,
        align_chunk=chunk_size if align_chunking else None,
        num_workers=num_workers,
        num_downloaders=num_downloaders,
        num_uploaders=num_uploaders,
        machine=machine,
        start_method=start_method,
        keep_data_ordered=keep_data_ordered,
        storage_options=storage_options,
        timeout=timeout,
        what="optimize",
    )
    num_workers = work.num_workers
    settings = dict(
        chunk_size=chunk_size,
        chunk_bytes=chunk_bytes,
        compression=compression,
        tokens=item_loader is not None and type(item_loader).__name__ == "TokensLoader",
    )
    out = Output(compat.output_location(output_dir), storage_options)
    job = _OptimizeJob(fn, work, out, settings, mode, verbose=bool(verbose), uploaders=num_uploaders)
    return launch.run(job, num_workers, num_nodes, timeout, start_method=start_method)


@dataclass
class _Plan:
    existing: DatasetIndex | None  # the dataset appended to
    base: str  # digest of that dataset's index ("" when none); part of every worker's fingerprint
    first_chunk: int
    nonce: str = ""  # queue jobs: unique per call, so that no checkpoint of an earlier call is resumed
    call_id: str = ""  # this call (settings, mode, fn, inputs), recorded in the index it publishes
    finished: bool = False  # the output already holds this call's result: nothing to do


class _OptimizeJob:
    desc = "optimize"

    def __init__(
        self,
        fn: Callable,
        work: compat.Work,
        out: Output,
        settings: dict[str, Any],
        mode: str | None,
        verbose: bool = True,
        uploaders: int | None = None,
    ):
        self.fn = fn
        self.work = work
        self.inputs = work.inputs if work.inputs is not None else []
        self.out = out
        self.settings = settings
        self.mode = mode
        self.total = work.total
        self.verbose = verbose
        self.uploaders = uploaders

    def prepare(self, world_size: int) -> _Plan:
        out = self.out
        out.ensure()
        text = out.read_text(INDEX_FILENAME)
        call_id = (
            fingerprint(dict(self.settings, mode=self.mode), self.fn, self.inputs, 0, len(self.inputs))
            if self.work.inputs is not None
            else ""
        )
        if text is not None and call_id:
            done = DatasetIndex.from_json(text, out.path(INDEX_FILENAME)).config
            if call_id in finished_jobs(done):  # a rerun of a call that finished (killed while shutting down)
                return _Plan(None, "", 0, call_id=call_id, finished=True)
        if text is not None and self.mode is None:
            raise DatasetExistsError(
                f"{out.url} already holds a dataset (index.json); pass mode='overwrite' to replace it or "
                "mode='append' to add to it"
            )
        existing = None
        if text is not None and self.mode == "append":
            existing = DatasetIndex.from_json(text, out.path(INDEX_FILENAME))
            _check_append_settings(existing, out.url, self.settings)
        elif text is not None:
            out.remove([INDEX_FILENAME])  # first: a crash from here on leaves no dataset, never a mixed one
        keep = {c.filename for c in existing.chunks} if existing else set()
        # Files no worker of this run may resume from: all of a replaced dataset's, else those of ranks this
        # run does not have (an interrupted run with more workers). Each rank cleans its own files itself.
        stale_from = 0 if text is not None and self.mode == "overwrite" else world_size
        out.remove(
            [n for n in out.names() if n not in keep and (_INDEX_TMP.match(n) or _owner(n) >= stale_from)]
        )
        first_chunk = (
            1 + max((_chunk_number(c.filename) for c in existing.chunks), default=-1) if existing else 0
        )
        base = hashlib.blake2b(text.encode(), digest_size=16).hexdigest() if existing else ""
        nonce = uuid.uuid4().hex if self.work.inputs is None else ""
        return _Plan(existing, base, first_chunk, nonce, call_id)

    def run(self, rank: int, world_size: int, plan: _Plan, progress: Progress) -> DatasetIndex | None:
        if plan.finished:
            return None
        split = self.work.split
        start, end = split.bounds(world_size)[rank] if split is not None else (0, 0)
        key = dict(self.settings, base=plan.base, first_chunk=plan.first_chunk, total=self.total)
        key.update(nonce=plan.nonce, bounds=[start, end])
        key.update(rank=rank, world_size=world_size)
        checkpointer = Checkpointer(
            self.out, f"{rank}.index.json", fingerprint(key, self.fn, self.inputs, start, end)
        )
        part = RankWriter(
            self.out, rank, self.settings, plan.existing, plan.first_chunk, checkpointer, self.uploaders
        )
        try:
            # This rank's chunks that its checkpoint does not list: written after the last save of a crashed run.
            keep = {c.filename for c in plan.existing.chunks} if plan.existing else set()
            keep |= {c.filename for c in part.chunks}
            names = self.out.names()
            self.out.remove(
                [n for n in names if n not in keep and _owner(n) == rank and _CHUNK_NAME.match(n)]
            )
            next_input, next_sample = part.position or (start, 0)
            progress.advance(next_input - start)
            last = next_input
            for i, item in self.work.source.items(next_input, end):
                progress.working_on(i, item)  # named in the error if fn hangs on it past the timeout
                self._write_input(part, i, item, next_sample if i == next_input else 0)
                progress.advance()
                last = i + 1
            return part.close(max(end, last))
        finally:
            part.cleanup()

    def _write_input(self, part: RankWriter, i: int, item: Any, skip: int) -> None:
        """Write input ``i``'s samples, skipping the first ``skip`` (already in published chunks)."""
        where = describe_input(i, item)
        try:
            result = self.fn(item)
        except Exception as err:
            raise InputError(f"fn failed on {where}: {type(err).__name__}: {err}", i) from err
        if not isinstance(result, types.GeneratorType):
            if result is not None:
                part.add(result, where, (i, 0))
            return
        number = 0
        while True:
            try:
                sample = next(result)
            except StopIteration:
                return
            except Exception as err:
                raise InputError(f"fn failed on {where}: {type(err).__name__}: {err}", i) from err
            if number >= skip:
                part.add(sample, where, (i, number))
            number += 1

    def finish(self, plan: _Plan, parts: list[DatasetIndex]) -> str:
        if plan.finished:  # only the leftovers of the interrupted shutdown remain to be removed
            self.out.remove([n for n in self.out.names() if _PARTIAL_NAME.match(n)])
            return self.out.url
        every = ([plan.existing] if plan.existing else []) + parts
        if any(part.chunks for part in every):
            merged = merge_indexes(every, self.out.url)
        else:  # fn returned None for every input: an empty dataset, as LitData writes one
            merged = DatasetIndex(
                chunks=[], config=plan.existing.config if plan.existing else parts[0].config
            )
        if plan.call_id:
            merged.config = record_job(merged.config, plan.call_id)
        self.out.write_text(INDEX_FILENAME, merged.to_json())
        self.out.remove([f"{rank}.index.json" for rank in range(len(parts))])
        return self.out.url


def _owner(name: str) -> int:
    """The writer rank a chunk or partial index file belongs to (-1: not a file this package writes)."""
    match = _CHUNK_NAME.match(name) or _PARTIAL_NAME.match(name)
    return int(match.group(1)) if match else -1


def _chunk_number(filename: str) -> int:
    match = _CHUNK_NAME.match(os.path.basename(filename))
    return int(match.group(2)) if match else -1


def _check_append_settings(existing: DatasetIndex, url: str, settings: dict[str, Any]) -> None:
    config = existing.config
    mismatches = []
    if config.get("compression") != settings["compression"]:
        mismatches.append(f"compression {config.get('compression')!r} vs {settings['compression']!r}")
    if (existing.item_loader_name == "TokensLoader") != settings["tokens"]:
        new_loader = "TokensLoader" if settings["tokens"] else "PyTreeLoader"
        mismatches.append(f"item_loader {existing.item_loader_name} vs {new_loader}")
    old = (config.get("chunk_size"), config.get("chunk_bytes"))
    new = (settings["chunk_size"], settings["chunk_bytes"])
    if old != new:
        mismatches.append(f"chunk_size/chunk_bytes {old[0]}/{old[1]} vs {new[0]}/{new[1]}")
    if mismatches:
        raise LitStreamingValueError(
            f"Cannot append to {url}: settings differ from the existing dataset: {mismatches}"
        )
