"""LitData's ``optimize`` / ``map`` arguments, checked once and turned into what our jobs use.

Both operators accept every argument of litdata 0.2.76's functions so that a LitData script ports by changing
its imports. Each argument either does what LitData does, has a real equivalent here, is accepted with no
effect (it tunes machinery we do not have; README "Compatibility with LitData" says why), or is refused with
an error naming it when honouring it is impossible (encryption, Lightning Studio machines). This module holds
the parts the two operators share.
"""

from __future__ import annotations

import multiprocessing.queues
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError
from lit_streaming_writer import inputs as inputs_module
from lit_streaming_writer.inputs import Batched, Head, Source, Split

START_METHODS = (None, "fork", "spawn", "forkserver")


@dataclass
class Work:
    """The inputs of one call, after LitData's input arguments were applied."""

    inputs: Sequence[Any] | None  # None: a queue feeds the workers
    split: Split | None
    source: Source
    total: int | None  # None for a queue (unknown until its end marker)
    num_workers: int | None = None  # the caller's, with LitData's ``0`` meaning 1


def output_location(output_dir: Any) -> str:
    """A path or URL; LitData's ``Dir`` objects (``.url`` / ``.path``) are accepted too."""
    if isinstance(output_dir, (str, os.PathLike)):
        return os.fspath(output_dir)
    url, path = getattr(output_dir, "url", None), getattr(output_dir, "path", None)
    if url or path:
        return str(url or path)
    raise LitStreamingTypeError(f"`output_dir` must be a path or URL, got {type(output_dir).__name__}")


def _check_common(
    *,
    machine: Any,
    start_method: str | None,
    num_workers: int | None,
    num_downloaders: int | None,
    num_uploaders: int | None,
    batch_size: int | None,
    keep_data_ordered: bool | None,
) -> int | None:
    """The worker and tuning arguments' checks; returns ``num_workers`` with LitData's ``0`` meaning 1."""
    if machine is not None:
        raise LitStreamingValueError(
            "`machine` selects a Lightning Studio machine for a remote LitData job; lit-streaming runs the job "
            "where it is called: pass machine=None (and num_workers / num_nodes for the processes)"
        )
    if start_method not in START_METHODS:
        raise LitStreamingValueError(f"`start_method` must be one of {START_METHODS}, got {start_method!r}")
    if num_workers == 0:  # LitData: 0 workers means one
        num_workers = 1
    inputs_module.positive_int(num_downloaders, "num_downloaders")
    inputs_module.positive_int(num_uploaders, "num_uploaders")
    inputs_module.positive_int(batch_size, "batch_size")
    if keep_data_ordered not in (None, True, False):
        raise LitStreamingValueError(f"`keep_data_ordered` must be a bool or None, got {keep_data_ordered!r}")
    return num_workers


def prepare_work(
    *,
    inputs: Any,
    queue: Any = None,
    input_dir: Any = None,
    weights: Sequence[float] | None = None,
    batch_size: int | None = None,
    fast_dev_run: Any = False,
    reader: Any = None,
    reorder_files: bool = True,
    align_chunk: int | None = None,
    num_workers: int | None = None,
    num_downloaders: int | None = None,
    num_uploaders: int | None = None,
    machine: Any = None,
    start_method: str | None = None,
    keep_data_ordered: bool | None = None,
    storage_options: dict[str, Any] | None = None,
    timeout: float = 1800.0,
    what: str = "optimize",
) -> Work:
    """The argument handling shared by ``optimize`` and ``map``: check the worker and tuning arguments, then
    apply, in LitData's order, ``batch_size`` (group inputs), ``reader.remap_items``, ``fast_dev_run`` (keep
    the first inputs), and decide the split over workers (``weights``, ``reorder_files``, ``align_chunking``)
    and how a worker prepares its inputs (``reader.read``, downloads from a remote ``input_dir``)."""
    num_workers = _check_common(
        machine=machine,
        start_method=start_method,
        num_workers=num_workers,
        num_downloaders=num_downloaders,
        num_uploaders=num_uploaders,
        batch_size=batch_size,
        keep_data_ordered=keep_data_ordered,
    )
    limit = inputs_module.fast_dev_run_count(fast_dev_run)
    if input_dir is not None:
        input_dir = os.fspath(input_dir) if isinstance(input_dir, os.PathLike) else input_dir
        if not isinstance(input_dir, str):
            raise LitStreamingTypeError(f"`input_dir` must be a path or URL, got {type(input_dir).__name__}")
    if queue is not None:
        if inputs is not None:
            raise LitStreamingValueError("Pass either `inputs` or `queue`, not both")
        if not isinstance(queue, multiprocessing.queues.Queue):
            raise LitStreamingValueError(
                f"`queue` must be a multiprocessing.Queue (workers are processes), got {type(queue).__name__}"
            )
        for name, value in (
            ("weights", weights),
            ("batch_size", batch_size),
            ("align_chunking", align_chunk),
        ):
            if value is not None:
                raise LitStreamingValueError(f"`{name}` needs `inputs`; it cannot apply to a `queue`")
        source = Source(None, reader, input_dir, num_downloaders, storage_options, queue, timeout)
        return Work(None, None, source, None, num_workers)
    if inputs is None:
        raise LitStreamingValueError("Pass `inputs` (a sequence of inputs) or `queue`")
    seq = inputs_module.as_sequence(inputs)
    if len(seq) == 0:
        raise LitStreamingValueError(f"`inputs` is empty: nothing to {what}")
    if weights is not None:
        if batch_size not in (None, 1):
            raise LitStreamingValueError(
                "`weights` weighs each input and `batch_size` groups them: pass one of the two"
            )
        if reader is not None:
            raise LitStreamingValueError(
                "Pass either `reader` or `weights`, not both (a reader remaps the inputs)"
            )
        if len(weights) != len(seq):
            raise LitStreamingValueError(
                f"`weights` has {len(weights)} entries but there are {len(seq)} inputs: pass one per input"
            )
    if batch_size is not None and batch_size > 1:
        seq = Batched(seq, batch_size)
    if reader is not None:
        remap = getattr(reader, "remap_items", None)
        if remap is not None:
            seq = inputs_module.as_sequence(remap(list(seq), num_workers or os.cpu_count() or 1))
        if not callable(getattr(reader, "read", None)):
            raise LitStreamingTypeError(
                f"`reader` must have a read(item) method, got {type(reader).__name__}"
            )
    if limit is not None:
        if weights is not None:
            weights = list(weights)[:limit]
        seq = Head(seq, limit)
    if input_dir is None:
        input_dir = inputs_module.infer_input_dir(seq)
    if (
        weights is None
        and reorder_files
        and align_chunk is None
        and input_dir is not None
        and not inputs_module.is_remote(input_dir)
    ):
        weights = inputs_module.file_size_weights(seq, input_dir)
    split = Split(len(seq), weights, align_chunk)
    source = Source(seq, reader, input_dir, num_downloaders, storage_options, None, timeout)
    return Work(seq, split, source, len(seq), num_workers)
