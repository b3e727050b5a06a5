"""How a chunk's items become samples: ``PyTreeLoader`` (the default: any nested structure of leaves) and
``TokensLoader`` (LLM pre-training: fixed-size token blocks cut across record boundaries).

A loader the user passes (``item_loader=TokensLoader(2049)``) is a *description*: ``loader_for`` binds a fresh
copy of it to each dataset, so one object shared by several datasets (the README's mixing example) never
carries one dataset's dtypes or chunk cache into another.
"""

from __future__ import annotations

import struct
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from lit_streaming.errors import LitStreamingValueError
from lit_streaming.format import pytree
from lit_streaming.format.chunk import ChunkView, CorruptChunkError
from lit_streaming.format.index import ChunkEntry, DatasetIndex, InvalidIndexError
from lit_streaming.format.items import split_pytree_item
from lit_streaming.format.serializers import (
    MEDIA_KINDS,
    PickleNotAllowedError,
    UnknownSerializerError,
    serializer_named,
)

_VIEW_FORMATS = ("no_header_numpy", "numpy", "no_header_tensor", "tensor")
# LitData 0.2.76 with pyarrow installed writes chunks of JSON-only dict samples as the usual header with
# empty items, followed by an Arrow IPC file of the rows, its u32 length and this magic.
_ARROW_FOOTER_MAGIC = b"LDARW01\0"
_ARROW_WINDOW = 256
# What a damaged leaf raises while it is decoded (PIL's OSError, UTF-8 and numpy size errors are ValueErrors,
# truncated struct/pickle payloads, torchvision's RuntimeError); each becomes a CorruptChunkError naming it.
_DECODE_ERRORS = (ValueError, OSError, struct.error, EOFError, RuntimeError, IndexError, KeyError, TypeError)


class ItemLoader(ABC):
    """Turns chunk bytes into samples. ``bind`` gives each dataset its own instance; cheap to pickle into
    workers."""

    def bind(self) -> ItemLoader:
        """A fresh, unset-up loader with the same settings: what ``loader_for`` hands each dataset."""
        return type(self)(**self.options())

    def options(self) -> dict[str, Any]:
        """The constructor arguments that describe this loader (``bind`` rebuilds it from them)."""
        return {}

    def setup(self, index: DatasetIndex, source: str, allow_pickle: bool) -> None:
        self._source = source
        data_format = index.data_format
        self._empty = not data_format and not index.chunks
        if not data_format and not self._empty:
            raise InvalidIndexError(f"{source}: config.data_format is empty")
        # Our writer never pickles numpy scalars, so a pickle leaf in an index it wrote holds arbitrary
        # objects: refuse before any chunk is read. LitData pickles numpy scalars, which the restricted
        # unpickler reads; anything else in its pickle leaves is refused when the item is read.
        written_by_us = "format_version" in index.config
        if not allow_pickle and written_by_us and any(fmt.split(":")[0] == "pickle" for fmt in data_format):
            raise PickleNotAllowedError(
                f"{source} stores pickled leaves (data_format={data_format}). Unpickling runs arbitrary code, "
                "so it is refused by default; pass allow_pickle=True if you trust this dataset."
            )
        self._formats = data_format
        self._serializers = [self._serializer(fmt, allow_pickle) for fmt in data_format]

    def _serializer(self, fmt: str, allow_pickle: bool) -> Any:
        try:
            return serializer_named(fmt, allow_pickle=allow_pickle, decode=self._decode_modes())
        except UnknownSerializerError as err:
            raise UnknownSerializerError(f"{self._source}/index.json: config.data_format: {err}") from err

    def _decode_modes(self) -> Mapping[str, str] | None:
        return None

    @abstractmethod
    def chunk_length(self, entry: ChunkEntry) -> int:
        """Samples this loader yields from the chunk."""

    @abstractmethod
    def load(self, view: ChunkView, local_index: int) -> Any: ...

    #: True where ``load_batch(views, local_indices)`` returns the samples as one batch, equal to
    #: ``default_collate`` of them and faster than loading them one by one
    reads_batches = False

    def settings(self) -> dict[str, Any]:
        """Everything about the loader that changes which samples exist (recorded in resume states)."""
        return {"item_loader": type(self).__name__}


class PyTreeLoader(ItemLoader):
    """Any nested structure of leaves (the default).

    Args:
        decode: media kinds to decode instead of returning their file bytes, e.g. ``{"video": "decode"}``
            (kinds: video, audio, pdf, mesh, nifti; each needs the library LitData uses for it). Images,
            JPEGs and TIFFs are always decoded, as LitData does.
    """

    def __init__(self, decode: Mapping[str, str] | None = None) -> None:
        decode = dict(decode or {})
        unknown = sorted(set(decode) - set(MEDIA_KINDS))
        if unknown:
            raise LitStreamingValueError(
                f"`decode` names unknown media kinds {unknown}; known: {list(MEDIA_KINDS)}"
            )
        self.decode = decode

    def options(self) -> dict[str, Any]:
        return {"decode": dict(self.decode)}

    def _decode_modes(self) -> Mapping[str, str] | None:
        return self.decode

    def setup(self, index: DatasetIndex, source: str, allow_pickle: bool) -> None:
        super().setup(index, source, allow_pickle)
        spec = index.config.get("data_spec")
        try:
            self._spec = pytree.loads(spec) if spec is not None else None
        except Exception as err:
            raise InvalidIndexError(f"{source}: config.data_spec is not a valid pytree spec ({err})") from err
        if self._spec is not None and self._spec.num_leaves != len(self._formats):
            raise InvalidIndexError(
                f"{source}: config.data_spec has {self._spec.num_leaves} leaves but data_format lists "
                f"{len(self._formats)}"
            )
        self._pairs = list(zip(self._serializers, self._formats, strict=False))
        # Array leaves are returned as zero-copy views of the chunk; when there are none, every leaf is decoded
        # into fresh memory and items are read without mapping the chunk (ChunkView.read_item).
        self._views = any(
            fmt.split(":")[0] in _VIEW_FORMATS and fmt != "numpy:scalar" for fmt in self._formats
        )

    def chunk_length(self, entry: ChunkEntry) -> int:
        return entry.chunk_size

    def load(self, view: ChunkView, local_index: int) -> Any:
        payload = view.item(local_index) if self._views else view.read_item(local_index)
        if not payload and self._pairs:
            return self._arrow_row(view, local_index)
        leaves = split_pytree_item(payload, len(self._pairs), f"{view.name} item {local_index}")
        try:
            values = [
                ser.deserialize(data, fmt) for data, (ser, fmt) in zip(leaves, self._pairs, strict=False)
            ]
        except _DECODE_ERRORS as err:
            raise self._leaf_error(view, local_index, leaves) from err
        if self._spec is None:
            return values[0] if len(values) == 1 else values
        return pytree.unflatten(values, self._spec)

    def _arrow_row(self, view: ChunkView, local_index: int) -> Any:
        """A row of a chunk whose samples live in LitData's Arrow footer (its items are empty)."""
        rows = getattr(self, "_arrow", None)
        if rows is None or rows.view is not view:
            rows = self._arrow = _ArrowRows(view)
        return rows.row(local_index)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_arrow", None)  # bound to one open chunk of one process
        return state

    def _leaf_error(self, view: ChunkView, local_index: int, leaves: list[memoryview]) -> Exception:
        """Find the leaf that fails (decoding again, leaf by leaf) and describe it: dataset, chunk, item, leaf."""
        paths = pytree.spec_leaf_paths(self._spec) if self._spec is not None else None
        for k, (data, (ser, fmt)) in enumerate(zip(leaves, self._pairs, strict=False)):
            try:
                ser.deserialize(data, fmt)
            except _DECODE_ERRORS as err:
                where = f"{view.name} item {local_index} leaf {paths[k] if paths else k} ({fmt!r})"
                if isinstance(err, PickleNotAllowedError):
                    return PickleNotAllowedError(f"{where}: {err}")
                return CorruptChunkError(f"{where} cannot be decoded: {type(err).__name__}: {err}")
        return CorruptChunkError(f"{view.name} item {local_index} cannot be decoded")


class _ArrowRows:
    """The rows of one chunk stored as LitData's Arrow IPC footer, converted to dicts a window at a time."""

    def __init__(self, view: ChunkView) -> None:
        self.view = view
        buffer = view.buffer
        if len(buffer) < 12 or bytes(buffer[-8:]) != _ARROW_FOOTER_MAGIC:
            raise CorruptChunkError(f"{view.name}: its items are empty and it has no Arrow row footer")
        (size,) = struct.unpack_from("<I", buffer, len(buffer) - 12)
        start = len(buffer) - 12 - size
        if size == 0 or start < int(view.offsets[-1]):
            raise CorruptChunkError(f"{view.name}: Arrow row footer of {size} bytes does not fit the chunk")
        try:
            import pyarrow as pa
        except ImportError as err:
            raise ModuleNotFoundError(
                f"{view.name} stores its rows as an Arrow table (LitData writes JSON-only samples that way when "
                "pyarrow is installed); reading it needs pyarrow: pip install 'lit-streaming[parquet]'"
            ) from err
        ipc = pa.py_buffer(buffer[start : start + size])
        try:
            opened = (
                pa.ipc.open_file(ipc)
                if bytes(buffer[start : start + 6]) == b"ARROW1"
                else pa.ipc.open_stream(ipc)
            )
            self.table = opened.read_all()
        except (pa.ArrowInvalid, OSError, ValueError) as err:
            raise CorruptChunkError(f"{view.name}: Arrow row footer cannot be read: {err}") from err
        if self.table.num_rows != view.num_items:
            raise CorruptChunkError(
                f"{view.name}: Arrow row footer has {self.table.num_rows} rows for {view.num_items} items"
            )
        self.start, self.rows = 0, []

    def row(self, j: int) -> dict[str, Any]:
        if not self.start <= j < self.start + len(self.rows):
            self.start = j - j % _ARROW_WINDOW
            self.rows = self.table.slice(self.start, _ARROW_WINDOW).to_pylist()
        return self.rows[j - self.start]


class TokensLoader(ItemLoader):
    """Serves ``block_size`` tokens per sample; blocks span record boundaries and each chunk's tail is dropped,
    exactly as LitData cuts them, so the same index yields the same blocks in both libraries."""

    def __init__(self, block_size: int | None = None) -> None:
        if block_size is not None and (not isinstance(block_size, int) or block_size <= 0):
            raise LitStreamingValueError(f"`block_size` must be a positive int, got {block_size!r}")
        self.block_size = block_size
        self._flat: weakref.WeakKeyDictionary[ChunkView, Any] = weakref.WeakKeyDictionary()

    def options(self) -> dict[str, Any]:
        return {"block_size": self.block_size}

    def setup(self, index: DatasetIndex, source: str, allow_pickle: bool) -> None:
        super().setup(index, source, allow_pickle)
        if self.block_size is None:
            raise LitStreamingValueError("TokensLoader needs `block_size` to read a dataset")
        if self._empty:  # an empty dataset (no chunks, no leaf formats): nothing to check or read
            return
        if len(self._formats) != 1 or self._formats[0].split(":")[0] not in (
            "no_header_numpy",
            "no_header_tensor",
        ):
            raise InvalidIndexError(
                f"{source}: TokensLoader needs one 1-D numpy/tensor leaf per record, found {self._formats}"
            )
        if any(c.dim is None for c in index.chunks):
            raise InvalidIndexError(
                f"{source}: chunks lack 'dim' (token counts); was it written with TokensLoader?"
            )

    def chunk_length(self, entry: ChunkEntry) -> int:
        return (entry.dim or 0) // self.block_size  # type: ignore[operator]

    def load(self, view: ChunkView, local_index: int) -> Any:
        # One flat token array per open chunk, dropped with the chunk: a shuffled reader alternates between
        # the chunks of its window, and re-wrapping the chunk for every block cost more than the copy.
        flat = self._flat.get(view)
        if flat is None:
            try:
                flat = self._serializers[0].deserialize(view.body(), self._formats[0])
            except ValueError as err:
                raise CorruptChunkError(f"{view.name}: token data ({self._formats[0]!r}): {err}") from err
            self._flat[view] = flat
        start = local_index * self.block_size  # type: ignore[operator]
        if start + self.block_size > len(flat):  # type: ignore[operator]
            raise CorruptChunkError(
                f"{view.name}: token block {local_index} lies past the chunk's {len(flat)} tokens"
            )
        return flat[start : start + self.block_size]

    reads_batches = True

    def load_batch(self, views: list[ChunkView], local_indices: list[int]) -> Any:
        # One stack of the blocks' views, what default_collate makes of the samples (numpy blocks become one
        # tensor), with no per-block Python beyond the slicing.
        import torch

        blocks = [self.load(view, j) for view, j in zip(views, local_indices, strict=True)]
        if isinstance(blocks[0], np.ndarray):
            return torch.from_numpy(np.stack(blocks))
        return torch.stack(blocks)

    def settings(self) -> dict[str, Any]:
        return {"item_loader": "TokensLoader", "block_size": self.block_size}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_flat"] = weakref.WeakKeyDictionary()
        return state


def loader_for(index: DatasetIndex, requested: ItemLoader | None, source: str) -> ItemLoader:
    """A loader of its own for one dataset: a fresh copy of the one the user described (never the object
    itself, which other datasets may share), or the default for the index. A mismatching explicit loader is
    a clear error, not garbage."""
    written = index.item_loader_name
    if requested is None:
        if written == "TokensLoader":
            raise LitStreamingValueError(
                f"{source} holds tokens: pass item_loader=TokensLoader(block_size=...)"
            )
        if written != "PyTreeLoader":
            raise InvalidIndexError(f"{source}: item loader {written!r} is not supported")
        return PyTreeLoader()
    # LitData's empty dataset records no config at all (``"config": null``): any loader reads its nothing.
    unknown = not index.chunks and not index.config.get("item_loader")
    if type(requested).__name__ != written and not unknown:
        raise LitStreamingValueError(
            f"{source} was written with {written}, but item_loader={type(requested).__name__} was given"
        )
    return requested.bind()
