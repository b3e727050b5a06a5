"""How a chunk's items become samples: ``PyTreeLoader`` (the default: any nested structure of leaves) and
``TokensLoader`` (LLM pre-training: fixed-size token blocks cut across record boundaries)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from lit_streaming.format import pytree
from lit_streaming.format.chunk import ChunkView, CorruptChunkError
from lit_streaming.format.index import ChunkEntry, DatasetIndex, InvalidIndexError
from lit_streaming.format.items import split_pytree_item
from lit_streaming.format.serializers import PickleNotAllowedError, serializer_named

_VIEW_FORMATS = ("no_header_numpy", "numpy", "no_header_tensor", "tensor")


class ItemLoader(ABC):
    """Turns chunk bytes into samples. One instance per dataset; cheap to pickle into workers."""

    def setup(self, index: DatasetIndex, source: str, allow_pickle: bool) -> None:
        self._source = source
        data_format = index.data_format
        if not data_format:
            raise InvalidIndexError(f"{source}: config.data_format is empty")
        if not allow_pickle and any(fmt.split(":")[0] == "pickle" for fmt in data_format):
            raise PickleNotAllowedError(
                f"{source} stores pickled leaves (data_format={data_format}). Unpickling runs arbitrary code, "
                "so it is refused by default; pass allow_pickle=True if you trust this dataset."
            )
        self._formats = data_format
        self._serializers = [serializer_named(fmt, allow_pickle=allow_pickle) for fmt in data_format]

    @abstractmethod
    def chunk_length(self, entry: ChunkEntry) -> int:
        """Samples this loader yields from the chunk."""

    @abstractmethod
    def load(self, view: ChunkView, local_index: int) -> Any: ...

    def settings(self) -> dict[str, Any]:
        """Everything about the loader that changes which samples exist (recorded in resume states)."""
        return {"item_loader": type(self).__name__}


class PyTreeLoader(ItemLoader):
    def setup(self, index: DatasetIndex, source: str, allow_pickle: bool) -> None:
        super().setup(index, source, allow_pickle)
        spec = index.config.get("data_spec")
        try:
            self._spec = pytree.loads(spec) if spec is not None else None
        except Exception as err:
            raise InvalidIndexError(f"{source}: config.data_spec is not a valid pytree spec ({err})") from err
        self._pairs = list(zip(self._serializers, self._formats, strict=False))
        # Array leaves are returned as zero-copy views of the chunk; every other leaf is decoded into fresh
        # memory, after which the item's mapped pages are no longer needed.
        self._views = any(fmt.split(":")[0] in _VIEW_FORMATS for fmt in self._formats)

    def chunk_length(self, entry: ChunkEntry) -> int:
        return entry.chunk_size

    def load(self, view: ChunkView, local_index: int) -> Any:
        leaves = split_pytree_item(
            view.item(local_index), len(self._pairs), f"{view.name} item {local_index}"
        )
        values = [ser.deserialize(data, fmt) for data, (ser, fmt) in zip(leaves, self._pairs, strict=False)]
        if not self._views:
            view.drop_item_pages(local_index)
        if self._spec is None:
            return values[0] if len(values) == 1 else values
        return pytree.unflatten(values, self._spec)


class TokensLoader(ItemLoader):
    """Serves ``block_size`` tokens per sample; blocks span record boundaries and each chunk's tail is dropped,
    exactly as LitData cuts them, so the same index yields the same blocks in both libraries."""

    def __init__(self, block_size: int | None = None) -> None:
        if block_size is not None and (not isinstance(block_size, int) or block_size <= 0):
            raise ValueError(f"`block_size` must be a positive int, got {block_size!r}")
        self.block_size = block_size
        self._flat: dict[int, tuple[Any, Any]] = {}

    def setup(self, index: DatasetIndex, source: str, allow_pickle: bool) -> None:
        super().setup(index, source, allow_pickle)
        if self.block_size is None:
            raise ValueError("TokensLoader needs `block_size` to read a dataset")
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
        cached = self._flat.get(id(view))
        if cached is None or cached[0] is not view:
            flat = self._serializers[0].deserialize(view.body(), self._formats[0])
            self._flat = {id(view): (view, flat)}
            cached = self._flat[id(view)]
        flat = cached[1]
        start = local_index * self.block_size  # type: ignore[operator]
        if start + self.block_size > len(flat):  # type: ignore[operator]
            raise CorruptChunkError(
                f"{view.name}: token block {local_index} lies past the chunk's {len(flat)} tokens"
            )
        return flat[start : start + self.block_size]

    def settings(self) -> dict[str, Any]:
        return {"item_loader": "TokensLoader", "block_size": self.block_size}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_flat"] = {}
        return state


def loader_for(index: DatasetIndex, requested: ItemLoader | None, source: str) -> ItemLoader:
    """The loader the index was written for; a mismatching explicit loader is a clear error, not garbage."""
    written = index.item_loader_name
    if requested is None:
        if written == "TokensLoader":
            raise ValueError(f"{source} holds tokens: pass item_loader=TokensLoader(block_size=...)")
        if written != "PyTreeLoader":
            raise InvalidIndexError(f"{source}: item loader {written!r} is not supported")
        return PyTreeLoader()
    if type(requested).__name__ != written:
        raise ValueError(
            f"{source} was written with {written}, but item_loader={type(requested).__name__} was given"
        )
    return requested
