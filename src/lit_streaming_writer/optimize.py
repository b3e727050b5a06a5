"""``optimize``: run a function over inputs and write what it returns as a chunked, streamable dataset."""

from __future__ import annotations

import glob
import os
import re
import types
from collections.abc import Callable, Sequence
from typing import Any

from lit_streaming.format import compression as zstd
from lit_streaming.format.index import INDEX_FILENAME, DatasetIndex, merge_indexes, read_index, write_text_atomic
from lit_streaming.format.units import parse_size
from lit_streaming_writer.launch import Progress, default_num_workers, run_workers
from lit_streaming_writer.writer import ChunkWriter

_MODES = (None, "overwrite", "append")
_CHUNK_NAME = re.compile(r"^chunk-(\d+)-(\d+)(\.[a-z]+)?\.bin$")


class InputError(RuntimeError):
    """``fn`` raised on an input; the message names the input, the cause holds the original exception."""


class DatasetExistsError(FileExistsError):
    """output_dir already holds a dataset and no ``mode`` says what to do with it."""


def shard_bounds(num_inputs: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous, balanced input ranges: merging shard outputs in rank order keeps the inputs' order."""
    base, extra = divmod(num_inputs, num_shards)
    bounds, start = [], 0
    for r in range(num_shards):
        end = start + base + (1 if r < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


class _WriteShard:
    """The per-worker job (a picklable object, so it also works with the spawn start method)."""

    def __init__(self, fn: Callable, inputs: Sequence[Any], bounds: list[tuple[int, int]], writer_args: dict) -> None:
        self.fn = fn
        self.inputs = inputs
        self.bounds = bounds
        self.writer_args = writer_args

    def __call__(self, rank: int, progress: Progress) -> DatasetIndex:
        writer = ChunkWriter(rank=rank, **self.writer_args)
        start, end = self.bounds[rank]
        for i in range(start, end):
            item = self.inputs[i]
            where = f"input #{i} ({_short(item)})"
            try:
                result = self.fn(item)
                if isinstance(result, types.GeneratorType):
                    for sample in result:
                        writer.add(sample, where)
                elif result is not None:
                    writer.add(result, where)
            except Exception as err:
                raise InputError(f"fn failed on {where}: {type(err).__name__}: {err}") from err
            progress.advance()
        return writer.finish()


def _short(item: Any, limit: int = 120) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
) -> str:
    """Apply ``fn`` to every input and write the samples to ``output_dir`` as chunks plus ``index.json``.

    ``fn`` returns one sample, ``None`` (skip the input), or is a generator yielding many samples. Inputs are
    split into contiguous shards, one per worker, and the shards' chunks are listed in rank order, so the same
    inputs and ``num_workers`` always give the same dataset. ``index.json`` appears only when every worker
    succeeded. ``mode``: ``None`` refuses an existing dataset, ``"overwrite"`` replaces it, ``"append"`` adds
    chunks after the existing ones (same sample structure and settings required).
    """
    if (chunk_size is None) == (chunk_bytes is None):
        raise ValueError("Pass exactly one of `chunk_size` (items per chunk) or `chunk_bytes` (e.g. '64MB')")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}")
    chunk_bytes = parse_size(chunk_bytes, "chunk_bytes")
    if mode not in _MODES:
        raise ValueError(f"`mode` must be None, 'overwrite' or 'append', got {mode!r}")
    zstd.parse_compression(compression)
    if num_nodes not in (None, 1):
        raise NotImplementedError("Multi-node optimize is not supported yet; use num_nodes=None")
    if not callable(fn):
        raise TypeError(f"`fn` must be callable, got {type(fn).__name__}")
    if isinstance(output_dir, str) and "://" in output_dir and not output_dir.startswith("file://"):
        raise NotImplementedError(f"Remote output_dir is not supported yet: {output_dir}")
    output_dir = os.path.abspath(os.fspath(output_dir).removeprefix("file://"))
    inputs = inputs if isinstance(inputs, Sequence) else list(inputs)
    if len(inputs) == 0:
        raise ValueError("`inputs` is empty: nothing to optimize")
    workers = min(num_workers or default_num_workers(), len(inputs))
    tokens = type(item_loader).__name__ == "TokensLoader" if item_loader is not None else False

    existing = _prepare_output(output_dir, mode)
    first_chunk = 0
    if existing is not None:
        _check_append_settings(existing, output_dir, chunk_size, chunk_bytes, compression, tokens)
        first_chunk = 1 + max((_chunk_number(c.filename) for c in existing.chunks), default=-1)

    bounds = shard_bounds(len(inputs), workers)
    writer_args = dict(
        output_dir=output_dir,
        chunk_size=chunk_size,
        chunk_bytes=chunk_bytes,
        compression=compression,
        tokens=tokens,
        first_chunk_index=first_chunk,
        expected=existing,
    )
    parts = run_workers(_WriteShard(fn, inputs, bounds, writer_args), workers, len(inputs), desc="optimize")
    merged = merge_indexes(([existing] if existing else []) + parts, output_dir)
    write_text_atomic(os.path.join(output_dir, INDEX_FILENAME), merged.to_json())
    for path in glob.glob(os.path.join(output_dir, "*.index.json")):
        os.remove(path)
    return output_dir


def _chunk_number(filename: str) -> int:
    match = _CHUNK_NAME.match(os.path.basename(filename))
    return int(match.group(2)) if match else -1


def _prepare_output(output_dir: str, mode: str | None) -> DatasetIndex | None:
    index_path = os.path.join(output_dir, INDEX_FILENAME)
    os.makedirs(output_dir, exist_ok=True)
    has_dataset = os.path.exists(index_path)
    if has_dataset and mode is None:
        raise DatasetExistsError(
            f"{output_dir} already holds a dataset (index.json); pass mode='overwrite' to replace it or "
            "mode='append' to add to it"
        )
    if has_dataset and mode == "append":
        existing = read_index(index_path)
        _remove_stale(output_dir, keep={c.filename for c in existing.chunks})
        return existing
    if has_dataset:
        os.remove(index_path)
    _remove_stale(output_dir, keep=set())
    return None


def _remove_stale(output_dir: str, keep: set[str]) -> None:
    """Delete chunk files and partial indexes that no published index.json lists (a crashed earlier run)."""
    for name in os.listdir(output_dir):
        if name in keep:
            continue
        if _CHUNK_NAME.match(name) or name.endswith(".index.json") or re.match(r"^chunk-.*\.bin\.tmp$", name):
            os.remove(os.path.join(output_dir, name))


def _check_append_settings(
    existing: DatasetIndex,
    output_dir: str,
    chunk_size: int | None,
    chunk_bytes: int | None,
    compression: str | None,
    tokens: bool,
) -> None:
    config = existing.config
    mismatches = []
    if config.get("compression") != compression:
        mismatches.append(f"compression {config.get('compression')!r} vs {compression!r}")
    if (existing.item_loader_name == "TokensLoader") != tokens:
        mismatches.append(f"item_loader {existing.item_loader_name} vs {'TokensLoader' if tokens else 'PyTreeLoader'}")
    if config.get("chunk_size") != chunk_size or config.get("chunk_bytes") != chunk_bytes:
        mismatches.append(
            f"chunk_size/chunk_bytes {config.get('chunk_size')}/{config.get('chunk_bytes')} vs {chunk_size}/{chunk_bytes}"
        )
    if mismatches:
        raise ValueError(f"Cannot append to {output_dir}: settings differ from the existing dataset: {mismatches}")
