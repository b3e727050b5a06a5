"""Pins the chunk byte layout (DESIGN.md section 4) and the checks that guard it.

Chunk file: u32 N, N+1 absolute u32 offsets (offsets[0] = 4*(N+2)), then the N payloads back to back.
Default item payload: L u32 leaf sizes, then the leaves. Token item payload: raw token bytes, no header.
All integers little-endian.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard

from lit_streaming.dataset import StreamingDataset
from lit_streaming.format import compression
from lit_streaming.format.chunk import ChunkView, CorruptChunkError, checksum, encode_chunk
from lit_streaming.format.items import encode_pytree_item, split_pytree_item
from lit_streaming.item_loaders import TokensLoader
from lit_streaming_writer import optimize


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


# ---- chunk layout ------------------------------------------------------------------------------------------
def test_chunk_layout_exact_bytes():
    data = encode_chunk([b"ab", b"", b"cde"])
    assert data == u32(3, 20, 22, 22, 25) + b"abcde"
    assert len(data) == 4 * (3 + 2) + 5 == 25


def test_chunk_first_offset_is_header_size():
    for n in (1, 2, 7):
        data = encode_chunk([b"x"] * n)
        header = np.frombuffer(data, dtype="<u4", count=n + 2)
        assert header[0] == n
        assert header[1] == 4 * (n + 2)
        assert list(np.diff(header[1:])) == [1] * n
        assert header[-1] == len(data)


def test_empty_chunk_layout():
    assert encode_chunk([]) == u32(0, 8)
    view = ChunkView(encode_chunk([]), "empty")
    assert view.num_items == 0
    assert bytes(view.body()) == b""


def test_chunk_view_slices_items_without_copying():
    data = bytearray(encode_chunk([b"ab", b"", b"cde"]))
    view = ChunkView(memoryview(data), "c")
    assert [bytes(view.item(j)) for j in range(3)] == [b"ab", b"", b"cde"]
    assert bytes(view.body()) == b"abcde"
    data[20] = ord("z")  # the item is a view of the buffer, not a copy
    assert bytes(view.item(0)) == b"zb"
    with pytest.raises(IndexError, match="out of range for chunk c"):
        view.item(3)
    with pytest.raises(IndexError):
        view.item(-1)


# ---- item payload layout -----------------------------------------------------------------------------------
def test_pytree_item_layout_exact_bytes():
    item = encode_pytree_item([b"x", b"", b"yz"])
    assert item == u32(1, 0, 2) + b"xyz"
    assert [bytes(m) for m in split_pytree_item(memoryview(item), 3, "w")] == [b"x", b"", b"yz"]


def test_pytree_item_split_checks_sizes():
    with pytest.raises(CorruptChunkError, match="where: item of 4 bytes is shorter than its 2-leaf header"):
        split_pytree_item(memoryview(u32(1)), 2, "where")
    with pytest.raises(CorruptChunkError, match="leaf sizes add up to 11 bytes but the item has 10"):
        split_pytree_item(memoryview(u32(1, 2) + b"xy"), 2, "where")


def test_written_chunk_matches_hand_built_bytes(tmp_path):
    """optimize's chunk for {"a": int, "s": str}: header, then per item leaf sizes, int64 LE, utf-8."""
    out = optimize(
        lambda i: {"a": i - 1, "s": "é" * i}, [0, 1, 2], str(tmp_path / "ds"), chunk_size=10, num_workers=1
    )
    items = [u32(8, 2 * i) + struct.pack("<q", i - 1) + ("é" * i).encode() for i in range(3)]
    index = json.loads(Path(out, "index.json").read_text())
    assert [c["filename"] for c in index["chunks"]] == ["chunk-0-0.bin"]
    assert Path(out, "chunk-0-0.bin").read_bytes() == encode_chunk(items)
    sizes = [len(p) for p in items]
    offsets = [20 + sum(sizes[:j]) for j in range(4)]
    assert Path(out, "chunk-0-0.bin").read_bytes()[:20] == u32(3, *offsets)
    assert index["config"]["data_format"] == ["int", "str"]


def test_token_chunk_is_raw_tokens_without_item_headers(tmp_path):
    records = [np.arange(k * 10, k * 10 + n, dtype=np.uint16) for k, n in enumerate([3, 5, 2])]
    out = optimize(
        lambda i: records[i],
        [0, 1, 2],
        str(tmp_path / "tok"),
        chunk_size=100,
        num_workers=1,
        item_loader=TokensLoader(),
    )
    data = Path(out, "chunk-0-0.bin").read_bytes()
    assert data == encode_chunk([r.tobytes() for r in records])
    assert data[4 * 5 :] == np.concatenate(records).tobytes()
    chunk = json.loads(Path(out, "index.json").read_text())["chunks"][0]
    assert (chunk["chunk_size"], chunk["dim"]) == (3, 10)  # items (records) and tokens


def test_token_reader_cuts_blocks_across_records_and_drops_tails(tmp_path):
    records = [np.arange(k * 100, k * 100 + n, dtype=np.int32) for k, n in enumerate([3, 5, 4, 6, 1])]
    out = optimize(
        lambda i: records[i],
        list(range(5)),
        str(tmp_path / "t"),
        chunk_size=12,
        num_workers=1,
        item_loader=TokensLoader(),
    )
    chunks = json.loads(Path(out, "index.json").read_text())["chunks"]
    assert [c["dim"] for c in chunks] == [12, 7]  # 3+5+4 fit in 12 tokens; 6+1 in the next chunk
    ds = StreamingDataset(out, item_loader=TokensLoader(block_size=5))
    assert len(ds) == 12 // 5 + 7 // 5 == 3
    flat0 = np.concatenate(records[:3])
    flat1 = np.concatenate(records[3:])
    assert [ds[i].tolist() for i in range(3)] == [
        flat0[:5].tolist(),
        flat0[5:10].tolist(),
        flat1[:5].tolist(),
    ]


# ---- whole-file compression --------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "suffix"), [("zstd", ".zstd.bin"), ("zstd:3", ".zstd:3.bin")])
def test_zstd_chunk_is_the_classic_layout_compressed(tmp_path, name, suffix):
    """LitData names whole-file chunks after the full compression string (and strips it to find the plain
    file once decompressed)."""
    out = optimize(
        lambda i: {"x": i}, list(range(5)), str(tmp_path / "z"), chunk_size=2, compression=name, num_workers=1
    )
    index = json.loads(Path(out, "index.json").read_text())
    assert index["config"]["compression"] == name
    assert "compression_level" not in index["config"]  # absent means whole-file to LitData
    for k, chunk in enumerate(index["chunks"]):
        assert chunk["filename"] == f"chunk-0-{k}{suffix}"
        stored = Path(out, chunk["filename"]).read_bytes()
        raw = zstandard.ZstdDecompressor().decompress(stored)
        assert chunk["file_bytes"] == len(stored)
        assert chunk["chunk_bytes"] == len(raw)
        assert chunk["checksum"] == checksum(stored)
        n = chunk["chunk_size"]
        assert raw[:8] == u32(n, 4 * (n + 2))
    assert [s["x"] for s in StreamingDataset(out)] == list(range(5))


@pytest.mark.parametrize(
    ("name", "parsed"),
    [(None, None), ("zstd", ("zstd", 4)), ("zstd:7", ("zstd", 7)), ("zstd:-1", ("zstd", -1))],
)
def test_compression_names(name, parsed):
    assert compression.parse_compression(name) == parsed


@pytest.mark.parametrize("name", ["gzip", "lz4", "zstd:x", "zstd:", "ZSTD", "zstd:1.5"])
def test_bad_compression_names(name):
    if name == "zstd:":
        assert compression.parse_compression(name) == ("zstd", 4)
        return
    with pytest.raises(ValueError, match="ompression"):
        compression.parse_compression(name)


def test_optimize_refuses_bad_compression_before_writing(tmp_path):
    with pytest.raises(ValueError, match="Unsupported compression 'gzip'"):
        optimize(lambda i: i, [1], str(tmp_path / "x"), chunk_size=1, compression="gzip", num_workers=1)
    assert not (tmp_path / "x" / "index.json").exists()


def test_decompress_is_bounded_by_the_index():
    blob = zstandard.ZstdCompressor().compress(b"a" * 1000)
    assert compression.decompress(blob, "zstd", 1000, "c") == b"a" * 1000
    with pytest.raises(ValueError, match="c: "):
        compression.decompress(blob, "zstd", 10, "c")
    with pytest.raises(ValueError, match="c: zstd data is corrupt"):
        compression.decompress(b"not zstd", "zstd", 10, "c")


# ---- LitData's in-file zstd (compression_level "batch" / "sample") -----------------------------------------
def framed(items: list[bytes], rows: int) -> bytes:
    """LitData's framed layout, built by hand from its documented structure."""
    n = len(items)
    logical = np.concatenate([[0], np.cumsum([len(i) for i in items])]).astype("<u4")
    frames = [items[s : s + rows] for s in range(0, n, rows)]
    blobs = [zstandard.ZstdCompressor().compress(b"".join(f)) for f in frames]
    cursor = 24 + 4 * (n + 1) + 24 * len(frames)
    table = b""
    for k, (f, blob) in enumerate(zip(frames, blobs, strict=False)):
        table += struct.pack("<IIQII", k * rows, len(f), cursor, len(blob), sum(map(len, f)))
        cursor += len(blob)
    prefix = struct.pack("<8sHHIII", b"LDFZ01\0\0", 1, 0, n, rows, len(frames))
    return prefix + logical.tobytes() + table + b"".join(blobs)


ITEMS = [b"alpha", b"", b"be", b"gamma-delta", b"e"]


def test_inflate_batch_gives_the_classic_layout():
    assert compression.inflate_in_file(framed(ITEMS, 2), "batch", "c") == encode_chunk(ITEMS)


def test_inflate_sample_gives_the_classic_layout():
    per_item = encode_chunk([zstandard.ZstdCompressor().compress(i) for i in ITEMS])
    assert compression.inflate_in_file(per_item, "sample", "c") == encode_chunk(ITEMS)


def test_inflate_batch_matches_litdata_packer():
    framed_zstd = pytest.importorskip("litdata.streaming.framed_zstd")
    pytest.importorskip("zstd")
    packed = framed_zstd.pack_framed_zstd(encode_chunk(ITEMS), framed_zstd.make_zstd_codec("zstd"), 2)
    assert compression.inflate_in_file(packed, "batch", "c") == encode_chunk(ITEMS)
    assert packed[24:].startswith(np.array([0, 5, 5, 7, 18, 19], "<u4").tobytes())


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"XXXXXXXX" + b[8:],  # no magic
        lambda b: b[:30],  # truncated table
        lambda b: b[:-3],  # truncated frame
        lambda b: b[:8] + struct.pack("<H", 2) + b[10:],  # unknown version
        lambda b: b[:-4] + b"\0\0\0\0",  # corrupt zstd data
    ],
)
def test_inflate_batch_rejects_damage(damage):
    with pytest.raises(CorruptChunkError, match="chunk-x"):
        compression.inflate_in_file(damage(framed(ITEMS, 2)), "batch", "chunk-x")


# ---- header validation -------------------------------------------------------------------------------------
BAD_HEADERS = [
    (b"", "truncated: 0 bytes"),
    (u32(3), "truncated: 4 bytes"),
    (u32(1000, 8) + b"x" * 8, "header of 1000 items exceeds 16 bytes"),
    (u32(2, 12, 13, 14) + b"ab", "invalid offsets \\(first 12"),  # offsets[0] must be 4*(N+2) = 16
    (u32(2, 16, 18, 17) + b"abc", "invalid offsets"),  # decreasing
    (u32(2, 16, 18, 99) + b"abc", "invalid offsets .* last 99, file 19 bytes"),  # beyond the file
]


@pytest.mark.parametrize(("data", "message"), BAD_HEADERS)
def test_chunk_view_rejects_bad_headers(data, message):
    with pytest.raises(CorruptChunkError, match=f"Chunk chunk-7.bin .*{message}|Chunk chunk-7.bin {message}"):
        ChunkView(data, "chunk-7.bin")


def test_file_chunk_view_rejects_bad_headers(tmp_path):
    """The same checks when the header is read from the file (``open_file``), and the file is closed after."""
    open_fds = len(os.listdir("/proc/self/fd"))
    for k, (data, message) in enumerate(BAD_HEADERS):
        if not data:
            continue
        path = tmp_path / f"c{k}.bin"
        path.write_bytes(data)
        with pytest.raises(
            CorruptChunkError, match=f"Chunk chunk-7.bin .*{message}|Chunk chunk-7.bin {message}"
        ):
            ChunkView.open_file(str(path), "chunk-7.bin", len(data))
    assert len(os.listdir("/proc/self/fd")) == open_fds


def _mapped(path) -> bool:
    return str(path) in Path("/proc/self/maps").read_text()


def test_file_chunk_view_reads_items_without_mapping_the_file(tmp_path):
    items = [b"alpha", b"", b"x" * 70_000, b"omega"]
    path = tmp_path / "chunk-0.bin"
    path.write_bytes(encode_chunk(items))
    view = ChunkView.open_file(str(path), "chunk-0.bin", path.stat().st_size, expected_items=4)
    assert [bytes(view.read_item(j)) for j in range(4)] == items
    assert not _mapped(path), "read_item mapped the chunk"
    with pytest.raises(IndexError, match="Item 4 out of range for chunk chunk-0.bin"):
        view.read_item(4)
    assert bytes(view.item(2)) == items[2]  # a zero-copy view maps it (copy-on-write)
    assert _mapped(path)
    assert bytes(view.read_item(3)) == b"omega" and bytes(view.body()) == b"".join(items)


def test_file_chunk_view_names_a_chunk_truncated_while_open(tmp_path):
    path = tmp_path / "chunk-3.bin"
    path.write_bytes(encode_chunk([b"a" * 100, b"b" * 100]))
    view = ChunkView.open_file(str(path), "chunk-3.bin", path.stat().st_size)
    with open(path, "r+b") as f:
        f.truncate(150)
    assert view.read_item(0) == b"a" * 100
    with pytest.raises(
        CorruptChunkError, match="chunk-3.bin ends at 150 bytes, 216 expected: truncated while open"
    ):
        view.read_item(1)
    with pytest.raises(CorruptChunkError, match="chunk-3.bin has 150 bytes, 216 when opened"):
        view.item(0)


def test_chunk_view_checks_item_count_against_index():
    with pytest.raises(CorruptChunkError, match="chunk-1.bin holds 2 items but index.json says 3"):
        ChunkView(encode_chunk([b"a", b"b"]), "chunk-1.bin", expected_items=3)


def test_chunk_over_4gib_is_refused():
    with pytest.raises(ValueError, match="4 GiB"):
        encode_chunk([memoryview(bytearray(1)), _Huge()])


class _Huge:
    """Pretends to be a 4 GiB payload (only its length is read before the size check)."""

    def __len__(self) -> int:
        return 2**32


def _one_chunk_dataset(tmp_path):
    out = optimize(
        lambda i: {"v": i, "s": "x" * i}, list(range(6)), str(tmp_path / "d"), chunk_size=3, num_workers=1
    )
    return out, os.path.join(out, "chunk-0-1.bin")


def test_reader_names_a_truncated_chunk(tmp_path):
    out, path = _one_chunk_dataset(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1)
    ds = StreamingDataset(out)
    assert ds[0]["v"] == 0  # chunk 0 is fine
    with pytest.raises(CorruptChunkError, match="chunk-0-1.bin .*index.json says"):
        ds[4]


def test_reader_names_a_forged_chunk_header(tmp_path):
    """Same size as the index says, but offsets pointing outside the file: refused before slicing."""
    out, path = _one_chunk_dataset(tmp_path)
    data = bytearray(Path(path).read_bytes())
    data[8:12] = u32(len(data) + 100)
    Path(path).write_bytes(bytes(data))
    with pytest.raises(CorruptChunkError, match="chunk-0-1.bin"):
        StreamingDataset(out)[3]


def test_reader_names_a_missing_chunk(tmp_path):
    out, path = _one_chunk_dataset(tmp_path)
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="chunk-0-1.bin"):
        StreamingDataset(out)[5]


# ---- zip bombs: declared sizes never allocate, inflation is bounded (issue 12 item 6) -------------------------
def zeros_frame(size: int, content_size: bool = True) -> bytes:
    """A zstd frame of ``size`` zero bytes, compressed in pieces (never ``size`` bytes in memory at once)."""
    import io

    out = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=content_size)
    with cctx.stream_writer(out, size=size if content_size else -1, closefd=False) as writer:
        piece = bytes(4 << 20)
        for start in range(0, size, len(piece)):
            writer.write(piece[: min(len(piece), size - start)])
    return out.getvalue()


def test_a_whole_file_chunk_claiming_gigabytes_is_refused_before_inflating():
    small = zstandard.ZstdCompressor(write_content_size=False).compress(os.urandom(98_000))
    start = time.monotonic()
    with pytest.raises(
        CorruptChunkError, match=r"chunk-x: index.json chunk_bytes 3221225472 is more than 1024x"
    ):
        compression.decompress(small, "zstd", 3 * 2**30, "chunk-x")
    assert time.monotonic() - start < 0.5


def test_a_frame_whose_size_disagrees_with_the_index_is_refused():
    blob = zstandard.ZstdCompressor().compress(b"a" * 1000)
    with pytest.raises(CorruptChunkError, match="declares 1000 bytes, index.json chunk_bytes says 900"):
        compression.decompress(blob, "zstd", 900, "c")


def test_an_unsupported_codec_names_the_chunk():
    with pytest.raises(CorruptChunkError, match=r"chunk-x: Unsupported compression 'lz4'"):
        compression.decompress(b"", "lz4", 10, "chunk-x")


def test_a_per_item_zstd_bomb_is_refused_before_inflating():
    bomb = zeros_frame(300 << 20)  # 300 MiB of zeros in a few KB
    assert len(bomb) < 100_000
    header = u32(1, 12, 12 + len(bomb))
    start = time.monotonic()
    with pytest.raises(CorruptChunkError, match=r"chunk-x item 0: its zstd frame declares 314572800 bytes"):
        compression.inflate_in_file(header + bomb, "sample", "chunk-x")
    assert time.monotonic() - start < 0.5


def test_a_per_item_zstd_bomb_without_a_declared_size_stops_at_the_bound():
    bomb = zeros_frame(300 << 20, content_size=False)
    header = u32(1, 12, 12 + len(bomb))
    with pytest.raises(CorruptChunkError, match=r"chunk-x item 0: zstd data inflates past 268435456 bytes"):
        compression.inflate_in_file(header + bomb, "sample", "chunk-x")
