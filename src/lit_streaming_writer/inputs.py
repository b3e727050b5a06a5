"""What a writing job's workers iterate over, built from LitData's input arguments.

``optimize`` and ``map`` take LitData's ways of describing the work: a sequence of inputs (possibly grouped
with ``batch_size``, cut short with ``fast_dev_run``, remapped by a ``reader``), a multiprocessing ``queue``
fed by a producer, inputs naming files under a remote ``input_dir`` that must be downloaded before ``fn`` sees
them, and ``weights`` / ``align_chunking`` / ``reorder_files`` deciding how the inputs are split over the
workers. This module turns those into two things a job uses: the contiguous input range of every worker
(``Split``) and, inside a worker, the prepared items of its range (``Source``). Ranges stay contiguous and in
input order whatever balances them, so the dataset's sample order is always the input order and a rerun
resumes exactly.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import posixpath
import queue as queue_module
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError
from lit_streaming_writer.errors import InputError, describe_input

log = logging.getLogger(__name__)

# LitData's defaults: fast_dev_run=True keeps 10 inputs; 2 downloader threads per worker.
FAST_DEV_RUN_INPUTS = 10
DEFAULT_DOWNLOADERS = 2


class Batched(Sequence):
    """``inputs`` grouped into lists of ``batch_size`` (the last one shorter), without copying ``inputs``."""

    def __init__(self, inputs: Sequence[Any], batch_size: int) -> None:
        self.inputs = inputs
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.inputs) // self.batch_size)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.batch_size
        return [self.inputs[i] for i in range(start, min(start + self.batch_size, len(self.inputs)))]


class Head(Sequence):
    """The first ``n`` inputs, without copying (``fast_dev_run``)."""

    def __init__(self, inputs: Sequence[Any], n: int) -> None:
        self.inputs = inputs
        self.n = min(n, len(inputs))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.inputs[index]


def positive_int(value: Any, name: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LitStreamingValueError(
            f"`{name}` must be a positive int{' or None' if allow_none else ''}, got {value!r}"
        )
    return value


def as_sequence(inputs: Any, name: str = "inputs") -> Sequence[Any]:
    """``inputs`` as an indexable sequence: sequences are used as they are (never copied), other iterables once
    listed. Strings, bytes and mappings are refused: iterating them is almost never what was meant."""
    if isinstance(inputs, (str, bytes, dict)):
        raise LitStreamingTypeError(f"`{name}` must be a sequence of inputs, got a {type(inputs).__name__}")
    if isinstance(inputs, Sequence):
        return inputs
    if hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__"):
        return _Indexable(inputs)
    try:
        return list(inputs)
    except TypeError:
        raise LitStreamingTypeError(
            f"`{name}` must be a sequence or an iterable, got {type(inputs).__name__}"
        ) from None


class _Indexable(Sequence):
    """A sized, indexable object that is not a registered ``Sequence`` (a map-style dataset, a tensor)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __len__(self) -> int:
        return len(self.obj)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.obj[i] for i in range(*index.indices(len(self)))]
        return self.obj[index]


def fast_dev_run_count(fast_dev_run: Any) -> int | None:
    """How many inputs ``fast_dev_run`` keeps: ``True`` -> 10 (LitData's number), an int -> that many."""
    if fast_dev_run is None or fast_dev_run is False:
        return None
    if fast_dev_run is True:
        return FAST_DEV_RUN_INPUTS
    if isinstance(fast_dev_run, int) and fast_dev_run > 0:
        return fast_dev_run
    raise LitStreamingValueError(f"`fast_dev_run` must be a bool or a positive int, got {fast_dev_run!r}")


# ---- splitting the inputs over the workers ------------------------------------------------------------------


class Split:
    """How ``total`` inputs are cut into one contiguous range per worker.

    Equal counts by default; ``weights`` (one non-negative number per input, e.g. file sizes) balance the
    ranges' total weight instead; ``align`` (a chunk size) gives every worker but the last a whole number of
    chunks, so the chunks are those one worker would write (LitData's ``align_chunking``).
    """

    def __init__(self, total: int, weights: Sequence[float] | None = None, align: int | None = None) -> None:
        if weights is not None and align is not None:
            raise LitStreamingValueError("Pass either `weights` or `align_chunking=True`, not both")
        if weights is not None:
            if len(weights) != total:
                raise LitStreamingValueError(
                    f"`weights` has {len(weights)} entries but there are {total} inputs: pass one per input"
                )
            cumulative, running = [], 0.0
            for k, w in enumerate(weights):
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
                    raise LitStreamingValueError(f"`weights[{k}]` must be a non-negative number, got {w!r}")
                running += float(w)
                cumulative.append(running)
            self._cumulative: list[float] | None = cumulative
        else:
            self._cumulative = None
        self.total = total
        self.align = align

    def bounds(self, num_workers: int) -> list[tuple[int, int]]:
        if self._cumulative is not None and self._cumulative and self._cumulative[-1] > 0:
            return _weighted_bounds(self._cumulative, num_workers)
        if self.align is not None:
            return _aligned_bounds(self.total, num_workers, self.align)
        return equal_bounds(self.total, num_workers)


def equal_bounds(num_inputs: int, num_workers: int) -> list[tuple[int, int]]:
    """Contiguous, balanced input ranges: merging the workers' outputs in rank order keeps the inputs' order."""
    base, extra = divmod(num_inputs, num_workers)
    bounds, start = [], 0
    for r in range(num_workers):
        end = start + base + (1 if r < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def _weighted_bounds(cumulative: list[float], num_workers: int) -> list[tuple[int, int]]:
    """Cut after the input where the running weight first reaches each k/num_workers of the total."""
    import bisect

    total = cumulative[-1]
    cuts = [0]
    for k in range(1, num_workers):
        cut = bisect.bisect_left(cumulative, total * k / num_workers) + 1
        cuts.append(min(max(cut, cuts[-1]), len(cumulative)))
    cuts.append(len(cumulative))
    return [(cuts[r], cuts[r + 1]) for r in range(num_workers)]


def _aligned_bounds(total: int, num_workers: int, chunk: int) -> list[tuple[int, int]]:
    per_worker = (total // chunk) // num_workers * chunk
    if per_worker == 0 and num_workers > 1:
        log.warning(
            "align_chunking: chunk_size %d is large for %d inputs over %d workers; only the last worker "
            "gets inputs",
            chunk,
            total,
            num_workers,
        )
    bounds = [(r * per_worker, (r + 1) * per_worker) for r in range(num_workers - 1)]
    bounds.append(((num_workers - 1) * per_worker, total))
    return bounds


def file_size_weights(inputs: Sequence[Any], root: str) -> list[int] | None:
    """Bytes of the existing files under ``root`` that each input names (``reorder_files``), or ``None`` when
    no input names one. Stat calls run on a few threads: a network drive answers slowly but in parallel."""
    root = os.path.abspath(root)

    def size(item: Any) -> int:
        total = 0
        for leaf in iter_strings(item):
            path = os.path.abspath(leaf)
            if path.startswith(root) and os.path.isfile(path):
                total += os.path.getsize(path)
        return total

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        sizes = list(pool.map(size, inputs, chunksize=256))
    return sizes if any(sizes) else None


# ---- pytree helpers --------------------------------------------------------------------------------------


def iter_strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from iter_strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from iter_strings(v)


def map_strings(obj: Any, fn: Callable[[str], str]) -> Any:
    """``obj`` with every string leaf of its dicts, lists and tuples replaced by ``fn(leaf)``."""
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, dict):
        mapped = {k: map_strings(v, fn) for k, v in obj.items()}
        return mapped if type(obj) is dict else type(obj)(mapped)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(map_strings(v, fn) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_strings(v, fn) for v in obj)
    return obj


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def infer_input_dir(inputs: Sequence[Any]) -> str | None:
    """LitData's rule: when the first input names a remote file (``s3://...``), its folder is the input dir
    (those files are downloaded before ``fn`` sees them)."""
    if len(inputs) == 0:
        return None
    for leaf in iter_strings(inputs[0]):
        if is_remote(leaf):
            return posixpath.dirname(leaf)
    return None


# ---- a worker's inputs ------------------------------------------------------------------------------------


class Source:
    """The inputs a worker processes, prepared for ``fn``: read by a LitData-style ``reader`` and, for inputs
    naming files under a remote ``input_dir``, with those files downloaded to local disk (paths rewritten) by
    ``num_downloaders`` threads a few inputs ahead of ``fn``. Downloaded files are deleted once ``fn`` is done
    with the input, so local disk holds only the inputs in flight."""

    def __init__(
        self,
        inputs: Sequence[Any] | None,
        reader: Any = None,
        input_dir: str | None = None,
        num_downloaders: int | None = None,
        storage_options: dict[str, Any] | None = None,
        queue: Any = None,
        queue_timeout: float = 1800.0,
    ) -> None:
        self.inputs = inputs
        self.reader = reader
        self.remote_dir = input_dir.rstrip("/") if input_dir and is_remote(input_dir) else None
        self.num_downloaders = num_downloaders or DEFAULT_DOWNLOADERS
        self.storage_options = dict(storage_options or {})
        self.queue = queue
        self.queue_timeout = queue_timeout
        self._fs: Any = None

    def items(self, start: int, end: int) -> Iterator[tuple[int, Any]]:
        """``(input index, prepared item)`` for inputs ``start..end-1`` in order (a queue: until its end)."""
        if self.queue is not None:
            yield from self._from_queue()
            return
        assert self.inputs is not None
        if self.remote_dir is None and self.reader is None:
            for i in range(start, end):
                yield i, self.inputs[i]
            return
        yield from self._prefetched(start, end)

    def _from_queue(self) -> Iterator[tuple[int, Any]]:
        local = tempfile.mkdtemp(prefix="lit-streaming-inputs-")
        number = 0
        try:
            while True:
                try:
                    item = self.queue.get(timeout=self.queue_timeout)
                except queue_module.Empty:
                    raise TimeoutError(
                        f"`queue`: no input and no end marker for {self.queue_timeout:.0f} s; put None on the "
                        "queue once the producer is done (one None stops every worker)"
                    ) from None
                if item is None or (isinstance(item, str) and item == "ALL_DONE"):
                    self.queue.put(item)  # every worker sees the end marker
                    return
                item, files = self._prepare(number, item, local)
                yield from _handed_out(number, item, files)
                number += 1
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def _prefetched(self, start: int, end: int) -> Iterator[tuple[int, Any]]:
        local = tempfile.mkdtemp(prefix="lit-streaming-inputs-")
        pool = ThreadPoolExecutor(max_workers=self.num_downloaders, thread_name_prefix="lit-streaming-input")
        pending: deque[tuple[int, Future]] = deque()
        ahead = 2 * self.num_downloaders
        next_i = start
        try:
            while pending or next_i < end:
                while next_i < end and len(pending) < ahead:
                    pending.append((next_i, pool.submit(self._prepare, next_i, self.inputs[next_i], local)))
                    next_i += 1
                i, future = pending.popleft()
                item, files = future.result()
                yield from _handed_out(i, item, files)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(local, ignore_errors=True)

    def _prepare(self, index: int, item: Any, local: str) -> tuple[Any, list[str]]:
        files: list[str] = []
        if self.remote_dir is not None:

            def fetch(leaf: str) -> str:
                if not (leaf == self.remote_dir or leaf.startswith(self.remote_dir + "/")):
                    return leaf
                target = os.path.join(local, f"{index}", leaf[len(self.remote_dir) + 1 :])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                try:
                    self._get(leaf, target)
                except Exception as err:
                    raise InputError(
                        f"Cannot download {leaf} for {describe_input(index, item)} (input_dir="
                        f"{self.remote_dir}): {type(err).__name__}: {err}",
                        index,
                    ) from err
                files.append(target)
                return target

            item = map_strings(item, fetch)
        if self.reader is not None:
            try:
                item = self.reader.read(item)
            except Exception as err:
                raise InputError(
                    f"reader.read failed on {describe_input(index, item)}: {type(err).__name__}: {err}", index
                ) from err
        return item, files

    def _get(self, url: str, target: str, attempts: int = 3) -> None:
        import fsspec

        if self._fs is None:
            self._fs = fsspec.core.url_to_fs(url, **self.storage_options)[0]
        for attempt in range(attempts):
            try:
                self._fs.get_file(url, target)
                return
            except FileNotFoundError:
                raise
            except Exception as err:
                if attempt + 1 == attempts:
                    raise
                log.warning("Retrying download of %s after %s: %s", url, type(err).__name__, err)
                time.sleep(0.5 * 2**attempt)


def _handed_out(index: int, item: Any, files: list[str]) -> Iterator[tuple[int, Any]]:
    """Yield one prepared input, then remove the files downloaded for it (also when the worker stops early)."""
    try:
        yield index, item
    finally:
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def accepted_keywords(fn: Callable) -> set[str]:
    """The optional keywords (``is_last``, ``device``) that ``fn`` declares, as LitData inspects them."""
    try:
        params = inspect.signature(fn).parameters  # a callable object: its __call__; a partial: what is left
    except (TypeError, ValueError):
        return set()
    return {name for name in ("is_last", "device") if name in params}
