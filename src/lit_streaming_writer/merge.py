"""``merge_datasets``: several optimized datasets into one, as litdata's ``merge_datasets`` does.

Chunks are copied (not re-encoded) into ``output_dir`` under fresh names, ``chunk-0-{n}``, in the order of
``input_dirs`` and of each index, so sample ``k`` of the merged dataset is sample ``k`` of the concatenation.
``index.json`` is written last and atomically: an interrupted merge leaves no dataset, only chunk files that a
rerun overwrites.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec

from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError
from lit_streaming.format.index import INDEX_FILENAME, ChunkEntry, DatasetIndex
from lit_streaming_writer.output import Output

# Config keys that must agree: they decide how every chunk's bytes decode. LitData checks the first two.
_MUST_AGREE = ("data_format", "compression", "compression_level", "data_spec", "item_loader", "encryption")


def merge_datasets(
    input_dirs: Sequence[str],
    output_dir: str,
    max_workers: int | None = os.cpu_count(),
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Merge the optimized datasets in ``input_dirs`` (local folders or fsspec URLs) into ``output_dir``.

    The datasets must decode the same way (same serializers, structure, compression and item loader; the error
    names the first that differs). ``max_workers`` threads copy the chunks; ``storage_options`` go to fsspec
    for every location.
    """
    if isinstance(input_dirs, (str, os.PathLike)):
        raise LitStreamingTypeError("`input_dirs` must be a list of dataset locations, got a single path")
    sources = [Output(d, storage_options) for d in input_dirs]
    if len(sources) == 0:
        raise LitStreamingValueError("`input_dirs` is empty: pass the datasets to merge")
    if len(sources) == 1:
        raise LitStreamingValueError("`input_dirs` holds one dataset: pass at least two to merge")
    out = Output(output_dir, storage_options)
    if any(s.url == out.url for s in sources):
        raise LitStreamingValueError(
            f"`output_dir` {out.url} is also one of `input_dirs`: merge into a new location"
        )
    indexes = []
    for source in sources:
        text = source.read_text(INDEX_FILENAME)
        if text is None:
            raise LitStreamingValueError(f"{source.url} has no index.json: it is not an optimized dataset")
        indexes.append(DatasetIndex.from_json(text, source.path(INDEX_FILENAME)))
    if out.read_text(INDEX_FILENAME) is not None:
        raise LitStreamingValueError(f"`output_dir` {out.url} already holds a dataset (index.json)")
    first = indexes[0].config
    for source, index in zip(sources[1:], indexes[1:]):
        for key in _MUST_AGREE:
            if index.config.get(key) != first.get(key):
                raise LitStreamingValueError(
                    f"Cannot merge {source.url} with {sources[0].url}: config.{key} differs "
                    f"({index.config.get(key)!r} vs {first.get(key)!r})"
                )
    compression = first.get("compression")
    whole_file = compression is not None and (first.get("compression_level") or "chunk") == "chunk"
    suffix = f".{compression}" if whole_file else ""
    copies: list[tuple[Output, ChunkEntry, str]] = []
    chunks: list[ChunkEntry] = []
    for source, index in zip(sources, indexes):
        for entry in index.chunks:
            name = f"chunk-0-{len(chunks)}{suffix}.bin"
            copies.append((source, entry, name))
            chunks.append(
                ChunkEntry(
                    filename=name,
                    chunk_size=entry.chunk_size,
                    chunk_bytes=entry.chunk_bytes,
                    dim=entry.dim,
                    checksum=entry.checksum,
                    file_bytes=entry.file_bytes,
                    extra=dict(entry.extra),
                )
            )
    out.ensure()
    with ThreadPoolExecutor(max_workers=max(1, max_workers or 1)) as pool:
        for done in pool.map(lambda job: _copy(*job, out), copies):
            del done
    out.write_text(INDEX_FILENAME, DatasetIndex(chunks=chunks, config=dict(first)).to_json())


def _copy(source: Output, entry: ChunkEntry, name: str, out: Output) -> None:
    """Copy one chunk; a short copy (the source changed or broke) is an error naming the file."""
    src = source.path(entry.filename)
    opener = open if source.is_local else source.fs.open
    with opener(src, "rb") as reader:
        if out.is_local:
            target = out.path(name)
            tmp = f"{target}.tmp-{os.getpid()}"
            with open(tmp, "wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
            size = os.path.getsize(tmp)
            os.replace(tmp, target)
        else:
            with fsspec.open(f"{out.url}/{name}", "wb", **out.storage_options) as writer:
                size = 0
                while block := reader.read(1 << 20):
                    writer.write(block)
                    size += len(block)
    if entry.file_bytes is not None and size != entry.file_bytes:
        raise LitStreamingValueError(f"{src}: copied {size} bytes but the index lists {entry.file_bytes}")
