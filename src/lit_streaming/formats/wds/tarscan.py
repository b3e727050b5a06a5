"""One pass over a tar's 512-byte headers: where each member's bytes are, grouped into samples as
WebDataset groups them (consecutive members sharing a key; the key is the name up to the first dot of its
last path component, the rest is the lower-cased extension).

Headers are parsed here rather than with ``tarfile`` so the pass seeks over member data instead of reading
it, and so every size a header declares is checked against the file before anything relies on it. ustar,
GNU long names and PAX ``path``/``size`` records are understood (what Python's tarfile, and so WebDataset's
ShardWriter, writes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from lit_streaming.formats.base import CorruptShardError

BLOCK = 512
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META = re.compile(r"__[^/]*__($|/)")
_REGULAR = (b"0", b"\0", b"7")


@dataclass
class TarIndex:
    """Members of one tar, and the samples they form. ``starts[s]:starts[s+1]`` are sample ``s``'s members."""

    keys: list[str]
    starts: np.ndarray
    exts: list[str]
    offsets: np.ndarray
    sizes: np.ndarray
    raw_bytes: int

    @property
    def num_samples(self) -> int:
        return len(self.keys)

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "starts": self.starts.tolist(),
            "exts": self.exts,
            "offsets": self.offsets.tolist(),
            "sizes": self.sizes.tolist(),
            "raw_bytes": self.raw_bytes,
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> TarIndex:
        """Parse and check a stored index: every member lies inside the tar, samples cover the members."""
        try:
            index = cls(
                keys=[str(k) for k in raw["keys"]],
                starts=np.asarray(raw["starts"], dtype=np.int64),
                exts=[str(e) for e in raw["exts"]],
                offsets=np.asarray(raw["offsets"], dtype=np.int64),
                sizes=np.asarray(raw["sizes"], dtype=np.int64),
                raw_bytes=int(raw["raw_bytes"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptShardError(f"{where}: malformed tar index entry ({err})") from err
        n = len(index.exts)
        ok = (
            len(index.offsets) == len(index.sizes) == n
            and len(index.starts) == len(index.keys) + 1
            and (len(index.starts) == 0 or (index.starts[0] == 0 and index.starts[-1] == n))
            and not np.any(np.diff(index.starts) < 0)
            and not np.any(index.offsets < 0)
            and not np.any(index.sizes < 0)
            and not np.any(index.offsets + index.sizes > index.raw_bytes)
        )
        if not ok:
            raise CorruptShardError(f"{where}: tar index entry is inconsistent or points outside the tar")
        return index


def header_mismatch(buffer: memoryview, index: TarIndex) -> int | None:
    """The first member whose own header (the block right before its data) is not a valid tar header
    declaring its recorded size, or None. Catches an index used on a shard rewritten at the same size."""
    for m in range(len(index.exts)):
        at = int(index.offsets[m]) - BLOCK
        header = bytes(buffer[at : at + BLOCK]) if at >= 0 else b""
        if len(header) < BLOCK or not _checksum_ok(header):
            return m
        declared = header[124:136]
        if not (declared[0] & 0x80) and header[156:157] in _REGULAR:
            try:
                if _number(declared, "") != int(index.sizes[m]) and int(index.sizes[m]) < 8**11:
                    return m
            except CorruptShardError:
                return m
    return None


def _number(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise CorruptShardError(f"{what}: header field {field!r} is not an octal number") from None


def _checksum_ok(header: bytes) -> bool:
    stored = header[148:156].split(b"\0", 1)[0].strip(b" \0")
    try:
        expected = int(stored, 8)
    except ValueError:
        return False
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return expected == unsigned


def _pax(data: bytes, what: str) -> dict[str, str]:
    """PAX extended header records: ``"<len> <key>=<value>\\n"``."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise CorruptShardError(f"{what}: malformed PAX header") from None
        if length <= 0 or pos + length > len(data):
            raise CorruptShardError(f"{what}: PAX record length {length} runs past its header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return out


def scan(f: BinaryIO, total: int | None, name: str) -> TarIndex:
    """Index the tar read from ``f`` (positioned at its start). ``total`` is its size when known (a plain
    file); every member must end within it. A stream (``.tar.gz``) is read forward only."""
    keys: list[str] = []
    starts: list[int] = []
    exts: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []
    current_key: str | None = None
    current_exts: set[str] = set()
    pos = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    consumed = 0
    while True:
        header = f.read(BLOCK)
        consumed = pos + len(header)
        if len(header) < BLOCK:
            if header.strip(b"\0"):
                raise CorruptShardError(f"Tar shard {name} is truncated: partial header at byte {pos}")
            break  # end of data without the end-of-archive blocks: tolerated, as tarfile does
        if not header.strip(b"\0"):
            break  # end-of-archive
        what = f"Tar shard {name} (header at byte {pos})"
        if not _checksum_ok(header):
            raise CorruptShardError(f"{what}: bad header checksum; not a tar file, or corrupt")
        size = _number(header[124:136], what)
        kind = header[156:157]
        data_at = pos + BLOCK
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise CorruptShardError(f"{what}: PAX size {pax['size']!r} is not a number") from None
        if total is not None and data_at + size > total:
            raise CorruptShardError(
                f"{what}: member of {size} bytes runs past the end of the {total}-byte file; truncated"
            )
        padded = -(-size // BLOCK) * BLOCK
        if kind in (b"L", b"x", b"g"):
            if size > 1 << 20:
                raise CorruptShardError(f"{what}: {size}-byte {kind.decode()} header is implausibly large")
            data = f.read(padded)[:size]
            if len(data) < size:
                raise CorruptShardError(f"{what}: truncated extended header")
            if kind == b"L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif kind == b"x":
                pax = _pax(data, what)
            pos = data_at + padded
            continue
        member = pax.get("path") or long_name or _ustar_name(header)
        long_name, pax = None, {}
        if kind in _REGULAR:
            current_key = _add_member(
                member, data_at, size, name, keys, starts, exts, offsets, sizes, current_key, current_exts
            )
        _skip(f, padded)
        pos = data_at + padded
    raw = total if total is not None else consumed + _drain(f)
    starts.append(len(exts))
    return TarIndex(
        keys=keys,
        starts=np.asarray(starts, dtype=np.int64),
        exts=exts,
        offsets=np.asarray(offsets, dtype=np.int64),
        sizes=np.asarray(sizes, dtype=np.int64),
        raw_bytes=raw,
    )


def _ustar_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if prefix:
            name = f"{prefix}/{name}"
    return name


def _add_member(
    member: str,
    data_at: int,
    size: int,
    shard: str,
    keys: list[str],
    starts: list[int],
    exts: list[str],
    offsets: list[int],
    sizes: list[int],
    current_key: str | None,
    current_exts: set[str],
) -> str | None:
    """Group a regular member the way WebDataset's ``group_by_keys`` does; returns the current key."""
    if ("/" not in member and member.startswith("__") and member.endswith("__")) or _META.match(member):
        return current_key  # WebDataset skips metadata members
    match = _KEY.match(member)
    if not match:
        return current_key
    key, ext = match.group(1), match.group(2).lower()
    if key != current_key:
        keys.append(key)
        starts.append(len(exts))
        current_exts.clear()
        current_key = key
    if ext in current_exts:
        raise CorruptShardError(
            f"Tar shard {shard}: member {member!r} repeats extension {ext!r} of sample {key!r}"
        )
    current_exts.add(ext)
    exts.append(ext)
    offsets.append(data_at)
    sizes.append(size)
    return current_key


def _skip(f: BinaryIO, n: int) -> None:
    if n <= 0:
        return
    try:
        f.seek(n, 1)
    except (OSError, ValueError):
        while n > 0:
            got = f.read(min(n, 1 << 20))
            if not got:
                return
            n -= len(got)


def _drain(f: BinaryIO) -> int:
    """Bytes left in a forward-only stream (the padding after the end-of-archive blocks)."""
    count = 0
    while True:
        block = f.read(1 << 20)
        if not block:
            return count
        count += len(block)
