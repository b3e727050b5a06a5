"""``optimize``: run a function over inputs and write what it returns as a chunked, streamable dataset."""

from __future__ import annotations

import hashlib
import os
import re
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lit_streaming.format import compression as zstd
from lit_streaming.format.index import INDEX_FILENAME, DatasetIndex, merge_indexes
from lit_streaming.format.units import parse_size
from lit_streaming_writer import launch
from lit_streaming_writer.checkpoint import Checkpointer, fingerprint
from lit_streaming_writer.coordinate import Progress
from lit_streaming_writer.errors import InputError, describe_input
from lit_streaming_writer.output import Output
from lit_streaming_writer.shard import ShardWriter

_MODES = (None, "overwrite", "append")
_CHUNK_NAME = re.compile(r"^chunk-(\d+)-(\d+)(\.[a-z0-9:]+)?\.bin(\.tmp)?$")  # ".zstd:3": compression
_PARTIAL_NAME = re.compile(r"^(\d+)\.index\.json(\.tmp-\d+)?$")
_INDEX_TMP = re.compile(r"^index\.json\.tmp-\d+$")


class DatasetExistsError(FileExistsError):
    """output_dir already holds a dataset and no ``mode`` says what to do with it."""


def optimize(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    output_dir: str,
    chunk_size: int | None = None,
    chunk_bytes: int | str | None = None,
    num_workers: int | None = None,
    num_nodes: int | None = None,
    compression: str | None = None,
    mode: str | None = None,
    item_loader: Any = None,
    storage_options: dict[str, Any] | None = None,
    timeout: float = 1800.0,
) -> str:
    """Apply ``fn`` to every input and write the samples to ``output_dir`` as chunks plus ``index.json``.

    ``fn`` returns one sample, ``None`` (skip the input), or is a generator yielding many samples.
    ``output_dir`` is a local folder (shared by all nodes when there are several) or an fsspec URL such as
    ``s3://bucket/prefix`` (``storage_options`` go to fsspec); chunks are uploaded as soon as they are
    written.

    Workers: see ``lit_streaming_writer.launch``. Inside a ``torchrun`` / ``fabric run`` / Fabric script
    every rank is a worker; otherwise ``num_workers`` processes per node (default: one per CPU) are launched
    with Fabric. Each worker takes a contiguous share of the inputs and the shares' chunks are listed in rank
    order, so the same inputs and workers always give the same samples in the same order (and chunks).

    ``mode``: ``None`` refuses an existing dataset, ``"overwrite"`` replaces it, ``"append"`` adds chunks
    after the existing ones (same sample structure and settings required). ``index.json`` appears only when
    every worker succeeded. After a crash, rerunning the same call resumes from the workers' checkpoints and
    gives the same dataset, chunks included, as an uninterrupted run (a generator ``fn`` must yield the same
    samples for the same input). ``timeout`` bounds, in seconds, every wait of one worker for the others.
    """
    if (chunk_size is None) == (chunk_bytes is None):
        raise ValueError("Pass exactly one of `chunk_size` (items per chunk) or `chunk_bytes` (e.g. '64MB')")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0
    ):
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}")
    chunk_bytes = parse_size(chunk_bytes, "chunk_bytes")
    if mode not in _MODES:
        raise ValueError(f"`mode` must be None, 'overwrite' or 'append', got {mode!r}")
    zstd.parse_compression(compression)
    if not callable(fn):
        raise TypeError(f"`fn` must be callable, got {type(fn).__name__}")
    inputs = inputs if isinstance(inputs, Sequence) else list(inputs)
    if len(inputs) == 0:
        raise ValueError("`inputs` is empty: nothing to optimize")
    settings = dict(
        chunk_size=chunk_size,
        chunk_bytes=chunk_bytes,
        compression=compression,
        tokens=item_loader is not None and type(item_loader).__name__ == "TokensLoader",
    )
    job = _OptimizeJob(fn, inputs, Output(output_dir, storage_options), settings, mode)
    return launch.run(job, num_workers, num_nodes, timeout)


@dataclass
class _Plan:
    existing: DatasetIndex | None  # the dataset appended to
    base: str  # digest of that dataset's index ("" when none); part of every worker's fingerprint
    first_chunk: int


class _OptimizeJob:
    desc = "optimize"

    def __init__(
        self, fn: Callable, inputs: Sequence[Any], out: Output, settings: dict[str, Any], mode: str | None
    ):
        self.fn = fn
        self.inputs = inputs
        self.out = out
        self.settings = settings
        self.mode = mode
        self.total = len(inputs)

    def prepare(self, world_size: int) -> _Plan:
        out = self.out
        out.ensure()
        text = out.read_text(INDEX_FILENAME)
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
        return _Plan(existing, base, first_chunk)

    def run(self, rank: int, world_size: int, plan: _Plan, progress: Progress) -> DatasetIndex:
        start, end = launch.shard_bounds(self.total, world_size)[rank]
        key = dict(self.settings, base=plan.base, first_chunk=plan.first_chunk, total=self.total)
        key.update(rank=rank, world_size=world_size)
        checkpointer = Checkpointer(
            self.out, f"{rank}.index.json", fingerprint(key, self.fn, self.inputs, start, end)
        )
        shard = ShardWriter(self.out, rank, self.settings, plan.existing, plan.first_chunk, checkpointer)
        try:
            # This rank's chunks that its checkpoint does not list: written after the last save of a crashed run.
            keep = {c.filename for c in plan.existing.chunks} if plan.existing else set()
            keep |= {c.filename for c in shard.chunks}
            names = self.out.names()
            self.out.remove(
                [n for n in names if n not in keep and _owner(n) == rank and _CHUNK_NAME.match(n)]
            )
            next_input, next_sample = shard.position or (start, 0)
            progress.advance(next_input - start)
            for i in range(next_input, end):
                self._write_input(shard, i, next_sample if i == next_input else 0)
                progress.advance()
            return shard.close(end)
        finally:
            shard.cleanup()

    def _write_input(self, shard: ShardWriter, i: int, skip: int) -> None:
        """Write input ``i``'s samples, skipping the first ``skip`` (already in published chunks)."""
        where = describe_input(i, self.inputs[i])
        try:
            result = self.fn(self.inputs[i])
        except Exception as err:
            raise InputError(f"fn failed on {where}: {type(err).__name__}: {err}", i) from err
        if not isinstance(result, types.GeneratorType):
            if result is not None:
                shard.add(result, where, (i, 0))
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
                shard.add(sample, where, (i, number))
            number += 1

    def finish(self, plan: _Plan, parts: list[DatasetIndex]) -> str:
        merged = merge_indexes(([plan.existing] if plan.existing else []) + parts, self.out.url)
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
        raise ValueError(f"Cannot append to {url}: settings differ from the existing dataset: {mismatches}")
