"""``index.json``: the dataset's table of chunks and its config, in LitData's layout.

We add two keys per chunk (``checksum``, ``file_bytes``) and one to ``config`` (``format_version``); LitData's
reader ignores keys it does not know, and an interop test proves it.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from lit_streaming.errors import LitStreamingError
from lit_streaming.format.compression import INFLATE_FLOOR, MAX_INFLATE_RATIO, inflate_limit

INDEX_FILENAME = "index.json"
FORMAT_VERSION = 1
JOBS_KEY = "jobs"  # in config: ids of the writing calls that produced it (see ``finished_jobs``)
MAX_JOBS = 64
_CHUNK_KEYS = ("chunk_bytes", "chunk_size", "dim", "filename", "checksum", "file_bytes")
_CHUNK_KEY_SET = frozenset(_CHUNK_KEYS)
# Names made only of these characters, without a "." or ".." component or a leading "/", cannot leave the
# folder in any decoding (no "%", "\\", ":" or NUL): an index whose names all look like this skips the
# per-name checks, which cost seconds on an index of 200,000 chunks.
_PLAIN_NAMES = re.compile(r"[A-Za-z0-9_.\-/\n]*")
_DOT_COMPONENT = re.compile(r"(?:^|/|\n)\.{1,2}(?:/|\n|$)")
# Loaders whose chunks use the classic layout (u32 item count, u32 offsets, payloads): a chunk of N items takes
# at least 4 * (N + 2) bytes before any compression, which bounds what an index may claim.
_CLASSIC_LOADERS = ("PyTreeLoader", "TokensLoader")


class InvalidIndexError(ValueError, LitStreamingError):
    """index.json is missing, unreadable, or describes something we refuse to read."""


def check_relative_filename(name: Any, source: str) -> str:
    """Refuse chunk names that are absolute or escape the dataset folder (a hostile index must not read /etc).

    Names are checked as written and percent-decoded (until stable): ``%2e%2e/secret.bin`` reaches
    ``/secret.bin`` on an HTTP server that decodes the path, and ``..%2fx`` on one that decodes slashes.
    """
    if not isinstance(name, str) or not name:
        raise InvalidIndexError(f"{source}: chunk filename {name!r} is not a non-empty string")
    if escapes_folder(name):
        raise InvalidIndexError(
            f"{source}: chunk filename {name!r} escapes the dataset folder; refusing to read it"
        )
    return name


def escapes_folder(name: str) -> bool:
    """Whether ``name``, as written or percent-decoded (until stable), is absolute or leaves its folder."""
    forms = [name]
    while len(forms) < 8 and unquote(forms[-1]) != forms[-1]:
        forms.append(unquote(forms[-1]))
    return any(_escapes(form) for form in forms)


def _escapes(name: str) -> bool:
    normalized = posixpath.normpath(name.replace("\\", "/"))
    return (
        name.startswith(("/", "\\"))
        or (len(name) > 1 and name[1] == ":")
        or "://" in name
        or normalized == ".."
        or normalized.startswith("../")
        or "\x00" in name
    )


@dataclass
class ChunkEntry:
    filename: str
    chunk_size: int
    chunk_bytes: int
    dim: int | None = None
    checksum: str | None = None
    file_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            chunk_bytes=self.chunk_bytes, chunk_size=self.chunk_size, dim=self.dim, filename=self.filename
        )
        if self.checksum is not None:
            out["checksum"] = self.checksum
        if self.file_bytes is not None:
            out["file_bytes"] = self.file_bytes
        return out

    @classmethod
    def from_dict(cls, raw: Any, source: str, position: int) -> ChunkEntry:
        where = f"{source}: chunks[{position}]"
        if not isinstance(raw, dict):
            raise InvalidIndexError(f"{where} is not an object")
        return cls(
            filename=check_relative_filename(raw.get("filename"), where),
            chunk_size=_nonneg_int(raw.get("chunk_size"), f"{where}.chunk_size"),
            chunk_bytes=_nonneg_int(raw.get("chunk_bytes"), f"{where}.chunk_bytes"),
            dim=None if raw.get("dim") is None else _nonneg_int(raw.get("dim"), f"{where}.dim"),
            checksum=raw.get("checksum"),
            file_bytes=None if raw.get("file_bytes") is None else _nonneg_int(raw["file_bytes"], where),
            extra={k: v for k, v in raw.items() if k not in _CHUNK_KEYS},
        )


def _compression_level(value: Any, source: str) -> str:
    if value is None or value == "":
        return "chunk"
    level = str(value).strip().lower()
    if level not in ("chunk", "batch", "sample"):
        raise InvalidIndexError(f"{source}: unknown config.compression_level {value!r} (chunk|batch|sample)")
    return level


def _format_version(value: Any, source: str) -> int:
    """``config.format_version`` as an int: absent means 1 (LitData's indexes), ``"2"`` means 2, anything that
    is not a whole number is refused (a version we cannot compare is one we cannot promise to read)."""
    if value is None:
        return 1
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidIndexError(f"{source}: config.format_version {value!r} is not a version number")
    return value


def _check_compression(value: Any, source: str) -> None:
    """Refuse a codec the reader cannot decode (``lz4``, ...) when the index is read, naming the file, rather
    than on the first chunk deep in a DataLoader worker."""
    if value is None or value == "":
        return
    algo, _, level = str(value).partition(":")
    if algo != "zstd" or (level and not level.lstrip("-").isdigit()):
        raise InvalidIndexError(
            f"{source}: config.compression {value!r} is not supported (lit-streaming reads zstd or none)"
        )


def _check_sizes(chunk: ChunkEntry, where: str, whole_file: bool) -> None:
    """Bound the sizes a chunk entry claims by the bytes it declares, before anything is allocated from them:
    a forged ``chunk_size`` or ``dim`` must fail here, not in a multi-terabyte array."""
    if 4 * (chunk.chunk_size + 2) > chunk.chunk_bytes and not (
        chunk.chunk_size == 0 and chunk.chunk_bytes == 0
    ):
        raise InvalidIndexError(
            f"{where}: chunk_size {chunk.chunk_size} cannot fit in chunk_bytes {chunk.chunk_bytes} "
            f"(a chunk of N items takes at least 4 * (N + 2) bytes)"
        )
    if chunk.dim is not None and chunk.dim > chunk.chunk_bytes:
        raise InvalidIndexError(
            f"{where}: dim {chunk.dim} (tokens) cannot fit in chunk_bytes {chunk.chunk_bytes}"
        )
    if whole_file and chunk.file_bytes is not None and chunk.chunk_bytes > inflate_limit(chunk.file_bytes):
        raise InvalidIndexError(
            f"{where}: chunk_bytes {chunk.chunk_bytes} is more than {MAX_INFLATE_RATIO}x its file_bytes "
            f"{chunk.file_bytes} of zstd (and over {INFLATE_FLOOR >> 20} MiB): refusing it as a zip bomb"
        )


def _ints(values: list[Any], optional: bool) -> bool:
    """Every value a non-negative int below 2**62 (or None when ``optional``), checked in bulk."""
    ints = [v for v in values if v is not None] if optional else values
    if not all(type(v) is int for v in ints):
        return False
    return not ints or (min(ints) >= 0 and max(ints) < 2**62)


def _bulk_entries(raws: list[Any]) -> list[ChunkEntry] | None:
    """All chunk entries at once when every one is plainly valid, else None (then each is checked alone).

    The same checks as :meth:`ChunkEntry.from_dict`, done column by column: this is what keeps opening an
    index of hundreds of thousands of chunks well under a second.
    """
    if not all(type(r) is dict for r in raws):
        return None
    names = [r.get("filename") for r in raws]
    if not all(type(n) is str and n for n in names):
        return None
    joined = "\n".join(names)
    if (
        joined.count("\n") != len(names) - 1
        or not _PLAIN_NAMES.fullmatch(joined)
        or joined.startswith("/")
        or "\n/" in joined
        or _DOT_COMPONENT.search(joined)
    ):
        return None
    sizes = [r.get("chunk_size") for r in raws]
    nbytes = [r.get("chunk_bytes") for r in raws]
    dims = [r.get("dim") for r in raws]
    file_bytes = [r.get("file_bytes") for r in raws]
    if not (_ints(sizes, False) and _ints(nbytes, False) and _ints(dims, True) and _ints(file_bytes, True)):
        return None
    return [
        ChunkEntry(
            r["filename"],
            r["chunk_size"],
            r["chunk_bytes"],
            r.get("dim"),
            r.get("checksum"),
            r.get("file_bytes"),
            {k: v for k, v in r.items() if k not in _CHUNK_KEY_SET} if r.keys() - _CHUNK_KEY_SET else {},
        )
        for r in raws
    ]


def _sizes_plausible(chunks: list[ChunkEntry]) -> bool:
    """:func:`_check_sizes` for uncompressed chunks, vectorised: True when no entry needs a closer look."""
    if not chunks:
        return True
    import numpy as np

    items = np.fromiter((c.chunk_size for c in chunks), np.int64, len(chunks))
    nbytes = np.fromiter((c.chunk_bytes for c in chunks), np.int64, len(chunks))
    dims = np.fromiter((-1 if c.dim is None else c.dim for c in chunks), np.int64, len(chunks))
    header_fits = (4 * (items + 2) <= nbytes) | ((items == 0) & (nbytes == 0))
    return bool(header_fits.all() and (dims <= nbytes).all())


def _nonneg_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidIndexError(f"{what} must be a non-negative integer, got {value!r}")
    return value


@dataclass
class DatasetIndex:
    chunks: list[ChunkEntry]
    config: dict[str, Any]
    updated_at: str | None = None

    @property
    def data_format(self) -> list[str]:
        return list(self.config.get("data_format") or [])

    @property
    def item_loader_name(self) -> str:
        return self.config.get("item_loader") or "PyTreeLoader"

    @property
    def compression(self) -> str | None:
        return self.config.get("compression")

    @property
    def compression_level(self) -> str:
        """How chunks are compressed (LitData's ``compression_level``): ``"chunk"`` (whole file, the default
        when absent), ``"batch"`` (zstd frames of several items inside a ``.bin``) or ``"sample"`` (one zstd
        frame per item)."""
        return _compression_level(self.config.get("compression_level"), "index.json")

    def to_json(self) -> str:
        data: dict[str, Any] = {"chunks": [c.to_dict() for c in self.chunks], "config": self.config}
        data["updated_at"] = self.updated_at or str(time.time())
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> DatasetIndex:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            raise InvalidIndexError(f"{source} is not valid JSON: {err}") from err
        except RecursionError:
            raise InvalidIndexError(f"{source} is nested too deeply to be an index.json") from None
        if not isinstance(data, dict) or not isinstance(data.get("chunks"), list):
            raise InvalidIndexError(f"{source} has no 'chunks' list; is this a LitData/lit-streaming index?")
        config = data.get("config")
        if "config" in data and config is None and not data["chunks"]:
            config = {}  # LitData's empty dataset (every input skipped): {"chunks": [], "config": null}
        if not isinstance(config, dict):
            raise InvalidIndexError(f"{source} has no 'config' object")
        if config.get("encryption"):
            raise InvalidIndexError(f"{source}: encrypted datasets are not supported yet")
        data_format = config.get("data_format")
        if data_format is not None and (
            not isinstance(data_format, list) or not all(isinstance(x, str) for x in data_format)
        ):
            raise InvalidIndexError(f"{source}: config.data_format must be a list of serializer names")
        _compression_level(config.get("compression_level"), source)
        version = _format_version(config.get("format_version", 1), source)
        if version > FORMAT_VERSION:
            raise InvalidIndexError(
                f"{source} uses format_version {version}; this lit-streaming reads up to {FORMAT_VERSION}: upgrade"
            )
        _check_compression(config.get("compression"), source)
        chunks = _bulk_entries(data["chunks"])
        if chunks is None:  # something is off: the per-entry checks name the entry and the field
            chunks = [ChunkEntry.from_dict(raw, source, k) for k, raw in enumerate(data["chunks"])]
        if (config.get("item_loader") or "PyTreeLoader") in _CLASSIC_LOADERS:
            whole_file = (
                bool(config.get("compression"))
                and _compression_level(config.get("compression_level"), source) == "chunk"
            )
            if whole_file or not _sizes_plausible(chunks):
                for k, chunk in enumerate(chunks):
                    _check_sizes(chunk, f"{source}: chunks[{k}] ({chunk.filename})", whole_file)
        updated = data.get("updated_at")
        return cls(chunks=chunks, config=config, updated_at=None if updated is None else str(updated))


def read_index(path: str) -> DatasetIndex:
    """Read a local index.json, with an error naming the path when it is missing or broken."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block open() forever
            raise InvalidIndexError(f"Cannot read {path}: not a regular file (a folder, FIFO or device)")
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        raise InvalidIndexError(
            f"No index.json at {path}: the folder is not an optimized dataset (run optimize first)"
        ) from None
    except OSError as err:
        raise InvalidIndexError(f"Cannot read {path}: {err}") from err
    return DatasetIndex.from_json(text, path)


def write_text_atomic(path: str, text: str) -> None:
    """Publish a file whole or not at all: readers never see a half-written index."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def merge_indexes(parts: list[DatasetIndex], source: str) -> DatasetIndex:
    """Concatenate partial indexes in the given order; their configs must agree (ignoring a 'not yet known'
    data format from writers that produced no sample). Leaf formats agree when one writer's sample could share
    a column with another's (``serializers.same_column``: ``image:jpg`` and ``image:png``, ``pil`` and
    ``jpeg``), as within one writer; the merged index keeps the first writer's names, as LitData's does."""
    numbered = [(k, p) for k, p in enumerate(parts) if p.chunks]
    if not numbered:
        raise InvalidIndexError(f"{source}: no chunks were written (did every input return None?)")
    first, config = numbered[0][0], dict(numbered[0][1].config)
    for k, part in numbered[1:]:
        if _config_body(part.config) != _config_body(config) or not _same_columns(
            config.get("data_format"), part.config.get("data_format")
        ):
            differing = sorted(
                key
                for key in set(config) | set(part.config)
                if config.get(key) != part.config.get(key) and key not in _MERGED_KEYS
            )
            raise InvalidIndexError(
                f"{source}: partial index #{k} disagrees with #{first} on {differing}: "
                f"{[config.get(key) for key in differing]} vs {[part.config.get(key) for key in differing]} "
                "(the samples of one writer differ in structure or types from another's)"
            )
    parts = [p for _, p in numbered]
    chunks = [c for p in parts for c in p.chunks]
    return DatasetIndex(chunks=chunks, config=config)


_MERGED_KEYS = ("chunk_bytes", "chunk_size", JOBS_KEY)  # may differ between partial indexes


def _config_body(config: dict[str, Any]) -> dict[str, Any]:
    """The config keys partial indexes must agree on exactly (``data_format`` is compared by column)."""
    return {k: v for k, v in config.items() if k not in (*_MERGED_KEYS, "data_format")}


def _same_columns(first: Any, other: Any) -> bool:
    if not isinstance(first, list) or not isinstance(other, list) or len(first) != len(other):
        return first == other
    from lit_streaming.format.serializers import same_column  # loads torch: only writers merge indexes

    return all(same_column(a, b) for a, b in zip(first, other, strict=True))


def finished_jobs(config: dict[str, Any]) -> list[str]:
    """Ids of the writing calls whose output this index already holds (``config["jobs"]``), oldest first.

    ``optimize`` records its call's id when it publishes the index, so that rerunning a call that already
    finished (its process killed during shutdown, after publishing) is recognised and does nothing instead of
    appending the same samples again or refusing an existing dataset. LitData's reader ignores the key.
    """
    jobs = config.get(JOBS_KEY)
    return [j for j in jobs if isinstance(j, str)] if isinstance(jobs, list) else []


def record_job(config: dict[str, Any], job_id: str) -> dict[str, Any]:
    """``config`` with ``job_id`` appended to its finished jobs (the last ``MAX_JOBS`` are kept)."""
    jobs = [j for j in finished_jobs(config) if j != job_id][-(MAX_JOBS - 1) :] + [job_id]
    return dict(config, **{JOBS_KEY: jobs})
