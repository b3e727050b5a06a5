"""Interop with the real LitData 0.2.76, both directions, on the same samples.

Ours -> LitData: our ``optimize`` writes, ``litdata.StreamingDataset`` reads, every leaf compares equal to
what was written (and to what our reader returns). LitData -> ours: ``litdata.optimize`` writes (in a
subprocess: it switches the calling process's multiprocessing start method to spawn for good), our
``StreamingDataset`` reads, and every sample equals both the expected one and LitData's own reading of the
same index.

All datasets are written once per module; the LitData subprocess starts when the module starts and runs while
the ours -> LitData tests do.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import litdata
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from support import interop as cases
from support import subprocess_env
from support.interop import (
    BLOCK_SIZE,
    N_MEDIA,
    N_MIXED,
    N_TOKENS,
    NUMPY_DTYPES,
    TOKEN_CHUNK_SIZE,
    TORCH_DTYPES,
)

from lit_streaming.dataset import StreamingDataset
from lit_streaming.item_loaders import TokensLoader
from lit_streaming_writer import optimize

# LitData's own decode path warns (torchvision deprecations, read-only buffers, chunk-size hints).
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning",
    "ignore:The given NumPy array",
    "ignore:The given buffer",
    "ignore::UserWarning",
)

HAS_LITDATA_ZSTD = True
try:  # LitData's compression needs the `zstd` package (not `zstandard`, which we use).
    import zstd  # noqa: F401
except ImportError:
    HAS_LITDATA_ZSTD = False
HAS_PYARROW = True
try:  # LitData 0.2.76 writes JSON-only dict samples as Arrow rows when pyarrow is importable
    import pyarrow  # noqa: F401
except ImportError:
    HAS_PYARROW = False
needs_litdata_zstd = pytest.mark.skipif(
    not HAS_LITDATA_ZSTD, reason="LitData's zstd compression needs the `zstd` package (pip install zstd)"
)


# ------------------------------------------------------------------------------------------------------------
# The comparator
# ------------------------------------------------------------------------------------------------------------
def assert_same(got: Any, want: Any, where: str = "sample", bytes_like: bool = False) -> None:
    """Deep, type-strict equality: dtype + shape + values for arrays and tensors, mode + size + pixels for PIL
    images, container types (dict / list / tuple) and key order, exact float bits. ``bytes_like`` accepts a
    memoryview for a bytes leaf (LitData returns its bytes leaves as memoryviews of the chunk)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: expected a dict, got {type(got).__name__}"
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]", bytes_like)
    elif isinstance(want, list | tuple):
        assert type(got) is type(want), f"{where}: expected {type(want).__name__}, got {type(got).__name__}"
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for k, (g, w) in enumerate(zip(got, want, strict=False)):
            assert_same(g, w, f"{where}[{k}]", bytes_like)
    elif isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{where}: expected a tensor, got {type(got).__name__}"
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{where}: shape {tuple(got.shape)} != {tuple(want.shape)}"
        assert torch.equal(got, want), f"{where}: values differ:\n{got}\n!=\n{want}"
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), f"{where}: expected an ndarray, got {type(got).__name__}"
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
        assert np.array_equal(got, want), f"{where}: values differ:\n{got}\n!=\n{want}"
    elif isinstance(want, Image.Image):
        assert isinstance(got, Image.Image), f"{where}: expected a PIL image, got {type(got).__name__}"
        assert (got.mode, got.size) == (
            want.mode,
            want.size,
        ), f"{where}: {got.mode} {got.size} != {want.mode} {want.size}"
        assert np.array_equal(np.asarray(got), np.asarray(want)), f"{where}: pixels differ"
    elif isinstance(want, bool):
        assert type(got) is bool and got == want, f"{where}: {got!r} != {want!r}"
    elif isinstance(want, int):
        assert type(got) is int and got == want, f"{where}: {got!r} != {want!r}"
    elif isinstance(want, float):
        assert type(got) is float, f"{where}: expected a float, got {type(got).__name__}"
        assert struct.pack("<d", got) == struct.pack("<d", want), f"{where}: {got!r} != {want!r}"
    elif isinstance(want, bytes):
        ok_types = (bytes, memoryview) if bytes_like else (bytes,)
        assert isinstance(got, ok_types), f"{where}: expected bytes, got {type(got).__name__}"
        assert bytes(got) == want, f"{where}: {bytes(got)!r} != {want!r}"
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def test_comparator_catches_differences():
    """The comparator itself must fail on dtype, shape, value, mode, container and float-bit differences."""
    base = {
        "a": np.arange(3, dtype=np.int32),
        "t": torch.zeros(2, 2),
        "img": Image.new("L", (2, 2)),
        "f": 0.0,
    }
    assert_same(base, dict(base))
    bad = [
        {**base, "a": np.arange(3, dtype=np.int64)},
        {**base, "a": np.arange(4, dtype=np.int32)},
        {**base, "a": np.array([0, 1, 3], dtype=np.int32)},
        {**base, "t": torch.zeros(2, 2, dtype=torch.float64)},
        {**base, "t": torch.zeros(4)},
        {**base, "img": Image.new("RGB", (2, 2))},
        {**base, "img": Image.new("L", (2, 2), color=1)},
        {**base, "f": -0.0},
        {**base, "f": 0},
        {"t": base["t"], "a": base["a"], "img": base["img"], "f": 0.0},  # key order
    ]
    for other in bad:
        with pytest.raises(AssertionError):
            assert_same(other, base)
    with pytest.raises(AssertionError):
        assert_same([1, 2], (1, 2))
    with pytest.raises(AssertionError):
        assert_same(memoryview(b"x"), b"x")
    assert_same(memoryview(b"x"), b"x", bytes_like=True)


# ------------------------------------------------------------------------------------------------------------
# Expected samples
# ------------------------------------------------------------------------------------------------------------
def decode_jpeg_file(path: str) -> torch.Tensor:
    """What both libraries promise for a JPEG leaf: the file decoded to a uint8 RGB CHW tensor, EXIF."""
    with open(path, "rb") as f:
        data = f.read()
    image = Image.open(path)
    if image.getexif().get(0x0112):
        rgb = ImageOps.exif_transpose(image).convert("RGB")
        return torch.from_numpy(np.asarray(rgb)).permute(2, 0, 1).contiguous()
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def test_expected_jpeg_decoding(jpegs):
    """The reference decode is what the issue asks for: uint8 CHW RGB, grayscale expanded, EXIF rotation applied."""
    rgb = decode_jpeg_file(jpegs["rgb"][0])
    assert (rgb.dtype, tuple(rgb.shape)) == (torch.uint8, (3, 16, 24))
    gray = decode_jpeg_file(jpegs["gray"])
    assert (
        tuple(gray.shape) == (3, 12, 20) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    )
    rotated = decode_jpeg_file(jpegs["exif"])
    assert tuple(rotated.shape) == (3, 30, 10)  # stored 30 wide x 10 high; orientation 6 turns it upright


def expected_mixed(i: int, jpegs: dict[str, Any], writer: str) -> dict[str, Any]:
    sample = cases.mixed_sample(i, jpegs, writer)
    sample["jpeg"] = {key: decode_jpeg_file(image.filename) for key, image in sample["jpeg"].items()}
    return sample


def expected_token_blocks(index_path: str, kind: str) -> list[Any]:
    """LitData's token semantics, from first principles: each chunk's tokens (its records, in order) cut into
    ``dim // block_size`` blocks; blocks cross record boundaries and the chunk's tail is dropped."""
    with open(index_path) as f:
        chunks = json.load(f)["chunks"]
    stream = np.concatenate([np.asarray(cases.token_record(i, kind)) for i in range(N_TOKENS)])
    blocks, start = [], 0
    for chunk in chunks:
        tokens = stream[start : start + chunk["dim"]]
        start += chunk["dim"]
        blocks.extend(
            tokens[b * BLOCK_SIZE : (b + 1) * BLOCK_SIZE] for b in range(chunk["dim"] // BLOCK_SIZE)
        )
    assert start == len(stream), "chunk dims must add up to every token written"
    if kind == "numpy":
        return blocks
    return [torch.from_numpy(b.copy()) for b in blocks]


# ------------------------------------------------------------------------------------------------------------
# The fields of the mixed sample, one test id each
# ------------------------------------------------------------------------------------------------------------
def _fields(writer: str) -> list[tuple[str, ...]]:
    fields = [(key,) for key in ("id", "int", "float", "str", "bool", "bytes")]
    fields += [("numpy", f"{dt}_{nd}") for nd in ("1d", "2d", "3d") for dt in NUMPY_DTYPES]
    fields += [("tensor", f"{name}_0d") for name in ("float32", "int64", "float64")]
    fields += [("tensor", f"{name}_{nd}") for nd in ("1d", "2d") for name in TORCH_DTYPES]
    if writer == "ours":
        fields += [("tensor", "bfloat16_1d"), ("tensor", "bfloat16_2d")]
    fields += [("pil", "rgb"), ("pil", "l"), ("jpeg", "rgb"), ("jpeg", "gray"), ("jpeg", "exif")]
    fields += [("nested", "list"), ("nested", "tuple"), ("nested", "dict")]
    return fields


def _get(sample: Any, field: tuple[str, ...]) -> Any:
    for key in field:
        sample = sample[key]
    return sample


def _id(field: tuple[str, ...]) -> str:
    return ".".join(field)


def test_fields_cover_the_whole_sample(tmp_path):
    jpegs = cases.make_jpegs(str(tmp_path))
    for writer in ("ours", "litdata"):
        sample = cases.mixed_sample(0, jpegs, writer)
        covered = {field[0] for field in _fields(writer) if len(field) == 1}
        for group in ("numpy", "tensor", "pil", "jpeg", "nested"):
            assert {f[1] for f in _fields(writer) if f[0] == group} == set(sample[group]), group
            covered.add(group)
        assert covered == set(sample)


# ------------------------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------------------------
def read_ours(path: str, item_loader: Any = None) -> list[Any]:
    ds = StreamingDataset(path, item_loader=item_loader)
    return [ds[i] for i in range(len(ds))]


def read_litdata(path: str, item_loader: Any = None, iterate: bool = False) -> list[Any]:
    ds = litdata.StreamingDataset(path, item_loader=item_loader)
    if iterate:
        return list(ds)
    return [ds[i] for i in range(len(ds))]


def litdata_copy(path: str, tmp_root: Path) -> str:
    """LitData decompresses local ``.zstd.bin`` chunks in place and deletes the originals: give it a copy."""
    target = tmp_root / f"litdata-reads-{Path(path).name}"
    if not target.exists():
        shutil.copytree(path, target)
    return str(target)


# ------------------------------------------------------------------------------------------------------------
# Datasets written once per module
# ------------------------------------------------------------------------------------------------------------
LITDATA_JOBS: dict[str, dict[str, Any]] = {
    "mixed": {"fn": "mixed_sample", "n": N_MIXED, "optimize": {"chunk_size": 3, "num_workers": 2}},
    "mixed_zstd_chunk": {
        "fn": "mixed_sample",
        "n": N_MIXED,
        "optimize": {
            "chunk_bytes": 12000,
            "compression": "zstd:3",
            "compression_level": "chunk",
            "num_workers": 1,
        },
        "zstd": True,
    },
    "mixed_zstd_batch": {  # LitData's default for compression="zstd": zstd frames inside .bin chunks
        "fn": "mixed_sample",
        "n": N_MIXED,
        "optimize": {"chunk_size": 4, "compression": "zstd", "compression_batch_size": 3, "num_workers": 1},
        "zstd": True,
    },
    "mixed_zstd_sample": {
        "fn": "mixed_sample",
        "n": N_MIXED,
        "optimize": {"chunk_size": 4, "compression": "zstd", "compression_level": "sample", "num_workers": 1},
        "zstd": True,
    },
    "tokens_np": {
        "fn": "token_record",
        "n": N_TOKENS,
        "tokens": True,
        "optimize": {"chunk_size": TOKEN_CHUNK_SIZE, "num_workers": 1},
    },
    "tokens_pt_zstd": {
        "fn": "token_record",
        "fn_kwargs": {"kind": "torch"},
        "n": N_TOKENS,
        "tokens": True,
        "optimize": {
            "chunk_size": TOKEN_CHUNK_SIZE,
            "compression": "zstd",
            "compression_level": "chunk",
            "num_workers": 1,
        },
        "zstd": True,
    },
    "json_lists": {"fn": "json_list_sample", "n": 6, "optimize": {"chunk_size": 4, "num_workers": 1}},
    "media": {"fn": "media_sample", "n": N_MEDIA, "optimize": {"chunk_size": 4, "num_workers": 1}},
    "litdata_only": {"fn": "litdata_only_sample", "n": 3, "optimize": {"chunk_size": 2, "num_workers": 1}},
    "pickled": {"fn": "pickled_sample", "n": 4, "optimize": {"chunk_size": 2, "num_workers": 1}},
}


class LitDataRun:
    """``litdata.optimize`` over every job in one subprocess, started early and awaited on first use."""

    def __init__(self, root: Path, jpegs: dict[str, Any], media: dict[str, str]) -> None:
        self.root = root
        jobs = []
        for name, job in LITDATA_JOBS.items():
            if job.get("zstd") and not HAS_LITDATA_ZSTD:
                continue
            job = {**job, "name": name, "output_dir": str(root / name)}
            if job["fn"] == "mixed_sample":
                job["fn_kwargs"] = {"jpegs": jpegs, "writer": "litdata"}
            elif job["fn"] == "media_sample":
                job["fn_kwargs"] = {"media": media, "writer": "litdata"}
            elif job["fn"] == "litdata_only_sample":
                job["fn_kwargs"] = {"media": media}
            jobs.append(job)
        (root / "jobs.json").write_text(json.dumps(jobs))
        cache = root / "litdata-cache"
        env = subprocess_env(
            DATA_OPTIMIZER_CACHE_FOLDER=str(cache / "chunks"),
            DATA_OPTIMIZER_DATA_CACHE_FOLDER=str(cache / "data"),
            TMPDIR=str(cache),
        )
        cache.mkdir()
        self.log = open(root / "litdata.log", "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("litdata_writer.py")),
                str(root / "jobs.json"),
                str(root / "result.json"),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.results: dict[str, Any] | None = None

    def wait(self) -> dict[str, Any]:
        if self.results is None:
            try:
                code = self.proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                code = "timeout"
            self.log.close()
            if code != 0:
                pytest.fail(
                    f"litdata writer subprocess failed ({code}):\n{(self.root / 'litdata.log').read_text()}"
                )
            self.results = json.loads((self.root / "result.json").read_text())
        return self.results

    def dataset(self, name: str) -> str:
        if LITDATA_JOBS[name].get("zstd") and not HAS_LITDATA_ZSTD:
            pytest.skip("LitData's zstd compression needs the `zstd` package")
        result = self.wait()[name]
        assert result["ok"], f"litdata.optimize failed for {name}:\n{result['error']}"
        return str(self.root / name)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> dict[str, Any]:
    return cases.make_jpegs(str(tmp_path_factory.mktemp("jpegs")))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, str]:
    return cases.make_media(str(tmp_path_factory.mktemp("media")))


@pytest.fixture(scope="module", autouse=True)
def litdata_run(tmp_path_factory, jpegs, media) -> LitDataRun:
    run = LitDataRun(tmp_path_factory.mktemp("litdata-written"), jpegs, media)
    yield run
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait()
    run.log.close()


@pytest.fixture(scope="module")
def ours(tmp_path_factory, jpegs) -> dict[str, str]:
    """Datasets written by our optimize."""
    root = tmp_path_factory.mktemp("ours-written")
    mixed = _MixedFn(jpegs, "ours")
    out = {}
    out["mixed"] = optimize(mixed, list(range(N_MIXED)), str(root / "mixed"), chunk_size=3, num_workers=2)
    out["mixed_zstd"] = optimize(
        mixed,
        list(range(N_MIXED)),
        str(root / "mixed_zstd"),
        chunk_bytes="12kB",
        compression="zstd",
        num_workers=1,
    )
    out["tokens_np"] = optimize(
        cases.token_record,
        list(range(N_TOKENS)),
        str(root / "tokens_np"),
        chunk_size=TOKEN_CHUNK_SIZE,
        num_workers=1,
        item_loader=TokensLoader(),
    )
    out["tokens_np_2workers"] = optimize(
        cases.token_record,
        list(range(N_TOKENS)),
        str(root / "tokens_np_2workers"),
        chunk_size=TOKEN_CHUNK_SIZE,
        num_workers=2,
        item_loader=TokensLoader(),
    )
    out["tokens_pt_zstd"] = optimize(
        _TorchTokens(),
        list(range(N_TOKENS)),
        str(root / "tokens_pt_zstd"),
        chunk_size=TOKEN_CHUNK_SIZE,
        compression="zstd:3",
        num_workers=1,
        item_loader=TokensLoader(),
    )
    return out


class _MixedFn:
    def __init__(self, jpegs: dict[str, Any], writer: str) -> None:
        self.jpegs, self.writer = jpegs, writer

    def __call__(self, i: int) -> dict[str, Any]:
        return cases.mixed_sample(i, self.jpegs, self.writer)


class _TorchTokens:
    def __call__(self, i: int) -> torch.Tensor:
        return cases.token_record(i, "torch")


_cache: dict[tuple[str, ...], Any] = {}


def cached(key: tuple[str, ...], make: Callable[[], Any]) -> Any:
    """Read each dataset once per reader per module: the parametrized tests share the result."""
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


@pytest.fixture(scope="module", autouse=True)
def _clear_cache():
    _cache.clear()
    yield
    _cache.clear()


# ------------------------------------------------------------------------------------------------------------
# Ours -> LitData
# ------------------------------------------------------------------------------------------------------------
OURS_PYTREE = ("mixed", "mixed_zstd")
OURS_TOKENS = ("tokens_np", "tokens_np_2workers", "tokens_pt_zstd")


def _ours_read_by_litdata(ours: dict[str, str], name: str, tmp_root: Path) -> list[Any]:
    path = ours[name]
    if "zstd" in name:
        path = litdata_copy(path, tmp_root)
    loader = litdata.TokensLoader(block_size=BLOCK_SIZE) if name.startswith("tokens") else None
    return cached(("litdata", name), lambda: read_litdata(path, loader))


@pytest.fixture(scope="module")
def lit_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("litdata-copies")


@pytest.mark.parametrize("name", OURS_PYTREE + OURS_TOKENS)
def test_ours_index_has_extra_keys_and_sorted_json(ours, name):
    """Precondition for every ours -> LitData test: our index carries keys LitData does not know."""
    text = Path(ours[name], "index.json").read_text()
    index = json.loads(text)
    assert text == json.dumps(index, sort_keys=True)
    assert index["config"]["format_version"] == 1
    assert index["chunks"], "no chunks"
    for chunk in index["chunks"]:
        assert chunk["checksum"].startswith("xxh3_64:")
        assert chunk["file_bytes"] == os.path.getsize(Path(ours[name], chunk["filename"]))


@pytest.mark.parametrize("field", _fields("ours"), ids=_id)
def test_ours_to_litdata_field(ours, jpegs, lit_tmp, field):
    lit = _ours_read_by_litdata(ours, "mixed", lit_tmp)
    mine = cached(("ours", "mixed"), lambda: read_ours(ours["mixed"]))
    assert len(lit) == len(mine) == N_MIXED
    for i in range(N_MIXED):
        want = _get(expected_mixed(i, jpegs, "ours"), field)
        assert_same(_get(lit[i], field), want, f"LitData sample {i}{list(field)}", bytes_like=True)
        assert_same(_get(mine[i], field), want, f"our sample {i}{list(field)}")


@pytest.mark.parametrize("name", OURS_PYTREE)
def test_ours_to_litdata_whole_samples(ours, jpegs, lit_tmp, name):
    if "zstd" in name and not HAS_LITDATA_ZSTD:
        pytest.skip("LitData's zstd compression needs the `zstd` package")
    lit = _ours_read_by_litdata(ours, name, lit_tmp)
    assert len(lit) == N_MIXED
    for i, got in enumerate(lit):
        assert_same(got, expected_mixed(i, jpegs, "ours"), f"{name} sample {i}", bytes_like=True)


def test_ours_to_litdata_iteration_order(ours):
    """LitData's iterator (no shuffle, one process) walks our chunks in index order."""
    ids = [sample["id"] for sample in read_litdata(ours["mixed"], iterate=True)]
    assert ids == list(range(N_MIXED))


@pytest.mark.parametrize("name", OURS_TOKENS)
def test_ours_tokens_to_litdata(ours, lit_tmp, name):
    if "zstd" in name and not HAS_LITDATA_ZSTD:
        pytest.skip("LitData's zstd compression needs the `zstd` package")
    kind = "torch" if "_pt" in name else "numpy"
    want = expected_token_blocks(os.path.join(ours[name], "index.json"), kind)
    lit = _ours_read_by_litdata(ours, name, lit_tmp)
    mine = read_ours(ours[name], TokensLoader(BLOCK_SIZE))
    assert len(lit) == len(mine) == len(want) > 0
    for b, (got_lit, got_ours, w) in enumerate(zip(lit, mine, want, strict=False)):
        assert_same(got_lit, w, f"LitData block {b}")
        assert_same(got_ours, w, f"our block {b}")


def test_token_fixture_exercises_spans_and_tails(ours):
    """The token datasets really have blocks that cross records and chunk tails that are dropped."""
    chunks = json.loads(Path(ours["tokens_np"], "index.json").read_text())["chunks"]
    assert len(chunks) > 2
    assert any(c["dim"] % BLOCK_SIZE for c in chunks), "no chunk has a tail to drop"
    assert all(c["dim"] <= TOKEN_CHUNK_SIZE for c in chunks)
    bounds = np.cumsum(cases.token_lengths())
    assert any(b % BLOCK_SIZE for b in bounds[:5]), "no block crosses a record boundary"
    assert [c["chunk_size"] for c in chunks] != [c["dim"] for c in chunks], "chunk_size counts records"


@needs_litdata_zstd
def test_ours_reads_zstd_folder_after_litdata_decompressed_it(ours, jpegs, lit_tmp):
    """LitData 0.2.76 decompresses a local zstd dataset in place (chunk-R-I.zstd.bin -> chunk-R-I.bin, the
    original deleted). Our reader must still read that folder."""
    path = litdata_copy(ours["mixed_zstd"], lit_tmp)
    _ours_read_by_litdata(ours, "mixed_zstd", lit_tmp)
    names = sorted(os.listdir(path))
    assert not any(n.endswith(".zstd.bin") for n in names), names  # LitData really did rewrite the folder
    mine = read_ours(path)
    for i, got in enumerate(mine):
        assert_same(got, expected_mixed(i, jpegs, "ours"), f"sample {i}")


def test_same_token_chunking_as_litdata(ours, litdata_run):
    """Same records, same chunk_size, one worker: both writers cut token chunks at the same records, so the
    same data gives the same blocks whichever library wrote it."""
    theirs = json.loads(Path(litdata_run.dataset("tokens_np"), "index.json").read_text())["chunks"]
    mine = json.loads(Path(ours["tokens_np"], "index.json").read_text())["chunks"]
    assert [(c["chunk_size"], c["dim"], c["chunk_bytes"]) for c in mine] == [
        (c["chunk_size"], c["dim"], c["chunk_bytes"]) for c in theirs
    ]
    for a, b in zip(mine, theirs, strict=False):
        assert (
            Path(ours["tokens_np"], a["filename"]).read_bytes()
            == Path(litdata_run.dataset("tokens_np"), b["filename"]).read_bytes()
        )


# ------------------------------------------------------------------------------------------------------------
# LitData -> ours
# ------------------------------------------------------------------------------------------------------------
LIT_PYTREE = ("mixed", "mixed_zstd_chunk", "mixed_zstd_batch", "mixed_zstd_sample")
LIT_TOKENS = ("tokens_np", "tokens_pt_zstd")


def _litdata_written(litdata_run: LitDataRun, name: str) -> tuple[list[Any], list[Any]]:
    """(our reading, LitData's own reading) of a LitData-written dataset; ours reads first, LitData a copy."""
    path = litdata_run.dataset(name)
    tokens = name.startswith("tokens")
    mine = cached(
        ("ours-of-lit", name), lambda: read_ours(path, TokensLoader(BLOCK_SIZE) if tokens else None)
    )
    lit_path = litdata_copy(path, litdata_run.root / "copies") if LITDATA_JOBS[name].get("zstd") else path
    loader = litdata.TokensLoader(block_size=BLOCK_SIZE) if tokens else None
    theirs = cached(("lit-of-lit", name), lambda: read_litdata(lit_path, loader))
    return mine, theirs


def test_litdata_index_has_keys_we_do_not_know(litdata_run):
    """Precondition: LitData 0.2.76 writes config keys of its own (types, compression_level, ...)."""
    config = json.loads(Path(litdata_run.dataset("mixed"), "index.json").read_text())["config"]
    assert {"types", "compression_level"} <= set(config)
    assert "format_version" not in config


@pytest.mark.parametrize("field", _fields("litdata"), ids=_id)
def test_litdata_to_ours_field(litdata_run, jpegs, field):
    mine, theirs = _litdata_written(litdata_run, "mixed")
    assert sorted(s["id"] for s in mine) == list(range(N_MIXED))
    for k, (got, lit) in enumerate(zip(mine, theirs, strict=False)):
        want = _get(expected_mixed(got["id"], jpegs, "litdata"), field)
        assert_same(_get(got, field), want, f"our sample {k} (id {got['id']}){list(field)}")
        assert_same(_get(lit, field), want, f"LitData sample {k}{list(field)}", bytes_like=True)


@pytest.mark.parametrize("name", LIT_PYTREE)
def test_litdata_to_ours_whole_samples(litdata_run, jpegs, name):
    mine, theirs = _litdata_written(litdata_run, name)
    assert len(mine) == len(theirs) == N_MIXED
    assert sorted(s["id"] for s in mine) == list(range(N_MIXED))
    for k, (got, lit) in enumerate(zip(mine, theirs, strict=False)):
        assert got["id"] == lit["id"], f"sample {k}: both readers must number samples the same way"
        assert_same(got, expected_mixed(got["id"], jpegs, "litdata"), f"{name} sample {k}")


def test_litdata_zstd_batch_chunks_are_framed(litdata_run):
    """Precondition: LitData's default zstd really writes framed .bin chunks (not whole-file .zstd.bin)."""
    path = Path(litdata_run.dataset("mixed_zstd_batch"))
    index = json.loads((path / "index.json").read_text())
    assert index["config"]["compression_level"] == "batch"
    assert all(not c["filename"].endswith(".zstd.bin") for c in index["chunks"])
    assert (path / index["chunks"][0]["filename"]).read_bytes()[:8] == b"LDFZ01\0\0"


@pytest.mark.parametrize("name", LIT_TOKENS)
def test_litdata_tokens_to_ours(litdata_run, name):
    mine, theirs = _litdata_written(litdata_run, name)
    kind = "torch" if "_pt" in name else "numpy"
    want = expected_token_blocks(os.path.join(litdata_run.dataset(name), "index.json"), kind)
    assert len(mine) == len(theirs) == len(want) > 0
    for b, (got, lit, w) in enumerate(zip(mine, theirs, want, strict=False)):
        assert_same(lit, w, f"LitData block {b}")
        assert_same(got, w, f"our block {b}")


def test_litdata_iteration_of_ours_matches_getitem(litdata_run):
    """Plain iteration of a LitData dataset with our reader follows the index order, like ds[i]."""
    path = litdata_run.dataset("mixed")
    ds = StreamingDataset(path)
    assert [s["id"] for s in ds] == [ds[i]["id"] for i in range(len(ds))]


def test_litdata_json_chunks_hold_arrow_rows_when_pyarrow_is_installed(litdata_run):
    """Precondition for reading LitData's Arrow-footer chunks: with pyarrow importable (in LitData's writer
    process too) a dataset of JSON-only dict samples has empty items and the rows in a trailing Arrow file."""
    path = Path(litdata_run.dataset("json_lists"))
    chunk = (path / json.loads((path / "index.json").read_text())["chunks"][0]["filename"]).read_bytes()
    n = struct.unpack_from("<I", chunk)[0]
    offsets = struct.unpack_from(f"<{n + 1}I", chunk, 4)
    assert chunk.endswith(b"LDARW01\0") == HAS_PYARROW
    assert (len(set(offsets)) == 1) == HAS_PYARROW  # arrow-only: every item is empty


def test_litdata_json_leaves_to_ours(litdata_run):
    path = litdata_run.dataset("json_lists")
    formats = json.loads(Path(path, "index.json").read_text())["config"]["data_format"]
    assert "json" in formats  # precondition: LitData stores each list of JSON scalars as one 'json' leaf
    mine = read_ours(path)
    theirs = read_litdata(path)
    assert [s["id"] for s in mine] == list(range(6))
    for got, lit in zip(mine, theirs, strict=True):
        assert_same(got, cases.json_list_sample(got["id"]))
        assert_same(lit, got)


def test_ours_json_leaves_to_litdata(tmp_path, litdata_run):
    """Our writer stores the lists of dict samples as LitData does: one 'json' leaf each, the same bytes."""
    out = optimize(cases.json_list_sample, list(range(6)), str(tmp_path / "j"), chunk_size=4, num_workers=1)
    config = json.loads(Path(out, "index.json").read_text())["config"]
    assert config["data_format"] == ["int", "json", "json", "json"]
    theirs = litdata_run.dataset("json_lists")
    their_index = json.loads(Path(theirs, "index.json").read_text())
    assert config["data_spec"] == their_index["config"]["data_spec"]
    for a, b in zip(
        json.loads(Path(out, "index.json").read_text())["chunks"], their_index["chunks"], strict=True
    ):
        their_chunk = Path(theirs, b["filename"]).read_bytes()
        if not HAS_PYARROW:  # with pyarrow LitData stores these rows as an Arrow footer instead
            assert Path(out, a["filename"]).read_bytes() == their_chunk
    for got, mine in zip(read_litdata(out), read_ours(out), strict=True):
        assert_same(got, cases.json_list_sample(got["id"]))
        assert_same(mine, got)


# ------------------------------------------------------------------------------------------------------------
# Every other leaf kind: image/tiff/video/audio/text/file wrappers, numpy scalars, JSON lists
# ------------------------------------------------------------------------------------------------------------
def _pixels(path: str, mode: str = "RGB") -> torch.Tensor:
    image = Image.open(path).convert(mode).convert("RGB")
    return torch.from_numpy(np.asarray(image)).permute(2, 0, 1).contiguous()


def expected_media(i: int, media: dict[str, str], writer: str) -> dict[str, Any]:
    """What a reader returns for ``media_sample(i)``; ``image.jpeg`` (re-encoded by the writer) is checked
    against the other library's reading instead."""
    import tifffile

    sample = cases.media_sample(i, media, writer)
    sample["image"] = {
        "path": _pixels(media["a.png"]),
        "bytes": _pixels(media["a.png"]),
        "jpeg": None,
        "gray": _pixels(media["a.png"], "L"),
    }
    sample["tiff"] = (
        np.full((2, 3), i, dtype=np.uint16) if writer == "ours" else tifffile.imread(media["a.tif"])
    )
    for key, name in (("video", "clip.mp4"), ("audio", "a.wav"), ("file", "notes.txt")):
        sample[key] = Path(media[name]).read_bytes()
    sample["text"] = f"caption {i} ✓"
    return sample


def read_litdata_media(path: str) -> list[Any]:
    """LitData decodes video/audio with torchcodec by default; ask it for the stored bytes instead."""
    from litdata.streaming.serializers import AudioSerializer, VideoSerializer

    serializers = {"video": VideoSerializer(decode="bytes"), "audio": AudioSerializer(decode="bytes")}
    ds = litdata.StreamingDataset(path, serializers=serializers)
    return [ds[i] for i in range(len(ds))]


def _check_media(got: Any, want: dict[str, Any], where: str, numpy_as: str, bytes_like: bool = False) -> None:
    jpeg = got["image"]["jpeg"]
    assert jpeg.dtype == torch.uint8 and tuple(jpeg.shape) == (3, *cases.image_pixels(want["id"]).shape[:2])
    got = {**got, "image": {**got["image"], "jpeg": None}}
    if numpy_as == "0-d arrays":  # LitData reads our numpy:scalar leaves through its numpy serializer
        want = {**want, "np": {k: np.asarray(v) for k, v in want["np"].items()}}
    assert_same(got, want, where, bytes_like=bytes_like)


def test_litdata_media_leaves_to_ours(litdata_run, media):
    path = litdata_run.dataset("media")
    formats = json.loads(Path(path, "index.json").read_text())["config"]["data_format"]
    assert {
        "image:png",
        "image:jpg",
        "tifffile",
        "video:mp4",
        "audio:wav",
        "text",
        "file:txt",
        "json",
    } <= set(formats)
    assert "pickle" in formats  # LitData pickles numpy scalars: ours reads them without allow_pickle
    mine = read_ours(path)
    theirs = read_litdata_media(path)
    assert [s["id"] for s in mine] == list(range(N_MEDIA))
    for k, (got, lit) in enumerate(zip(mine, theirs, strict=True)):
        want = expected_media(got["id"], media, "litdata")
        _check_media(got, want, f"our sample {k}", "scalars")
        _check_media(lit, want, f"LitData sample {k}", "scalars", bytes_like=True)
        assert torch.equal(got["image"]["jpeg"], lit["image"]["jpeg"])


def test_ours_media_leaves_to_litdata(tmp_path, media):
    fn = functools.partial(cases.media_sample, media=media, writer="ours")
    out = optimize(fn, list(range(N_MEDIA)), str(tmp_path / "media"), chunk_size=4, num_workers=1)
    formats = json.loads(Path(out, "index.json").read_text())["config"]["data_format"]
    assert "pickle" not in formats and formats.count("numpy:scalar") == 5
    mine = read_ours(out)
    theirs = read_litdata_media(out)
    for k, (got, lit) in enumerate(zip(mine, theirs, strict=True)):
        want = expected_media(k, media, "ours")
        _check_media(got, want, f"our sample {k}", "scalars")
        _check_media(lit, want, f"LitData sample {k}", "0-d arrays", bytes_like=True)
        assert torch.equal(got["image"]["jpeg"], lit["image"]["jpeg"])


def test_ours_writes_the_same_media_leaves_as_litdata(tmp_path, litdata_run, media):
    """Same wrappers, same leaf bytes: every leaf except the numpy scalars (LitData pickles them) and the
    TIFF (a Tiff(array=) here, a path there) is byte-identical to LitData's."""
    fn = functools.partial(cases.media_sample, media=media, writer="ours")
    out = optimize(fn, list(range(N_MEDIA)), str(tmp_path / "media"), chunk_size=4, num_workers=1)
    ours_cfg = json.loads(Path(out, "index.json").read_text())["config"]
    lit_cfg = json.loads(Path(litdata_run.dataset("media"), "index.json").read_text())["config"]
    assert ours_cfg["data_spec"] == lit_cfg["data_spec"]
    for a, b in zip(ours_cfg["data_format"], lit_cfg["data_format"], strict=True):
        assert a == b or (a, b) in {("numpy:scalar", "pickle"), ("tifffile", "tifffile")}


def test_litdata_only_leaves_to_ours(litdata_run):
    """Leaves our writer does not produce. LitData 0.2.76 cannot read its own 'tiff' leaves (it registers the
    reader as 'tifffile') nor pdf/mesh/nifti without their libraries, so only our reading is checked."""
    path = litdata_run.dataset("litdata_only")
    formats = json.loads(Path(path, "index.json").read_text())["config"]["data_format"]
    assert formats == ["int", "tiff", "jpeg_array", "graph", "pdf", "mesh:glb", "nifti:nii"]
    for got in read_ours(path):
        i = got["id"]
        assert_same(got["tiff"], np.full((3, 2), i, dtype=np.uint8))
        assert [tuple(t.shape) for t in got["jpegs"]] == [(3, 6, 10), (3, 7, 10)]
        assert torch.equal(got["graph"]["x"], torch.full((3, 2), float(i)))
        assert torch.equal(got["graph"]["edge_index"], torch.tensor([[0, 1], [1, 2]]))
        assert got["pdf"].startswith(b"%PDF") and got["mesh"].startswith(b"glTF") and len(got["nifti"]) == 16


def test_litdata_jpeg_array_matches_litdata_reading(litdata_run, media):
    path = litdata_run.dataset("litdata_only")
    mine = read_ours(path)
    expected = [decode_jpeg_file(media[f"j{k}.jpg"]) for k in range(2)]
    for got in mine:
        for a, b in zip(got["jpegs"], expected, strict=True):
            assert_same(a, b)


# ------------------------------------------------------------------------------------------------------------
# Item readers are per dataset; damaged leaves name where they are
# ------------------------------------------------------------------------------------------------------------
def test_one_tokens_loader_shared_by_datasets_of_different_dtypes(ours):
    """The README's mixing example passes one TokensLoader to several datasets: uint16 numpy tokens and
    int64 torch tokens must each come back right, read interleaved."""
    loader = TokensLoader(BLOCK_SIZE)
    a = StreamingDataset(ours["tokens_np"], item_loader=loader)
    b = StreamingDataset(ours["tokens_pt_zstd"], item_loader=loader)
    want_a = expected_token_blocks(os.path.join(ours["tokens_np"], "index.json"), "numpy")
    want_b = expected_token_blocks(os.path.join(ours["tokens_pt_zstd"], "index.json"), "torch")
    assert len(a) == len(want_a) and len(b) == len(want_b)
    for k in range(max(len(a), len(b))):
        if k < len(a):
            assert_same(a[k], want_a[k], f"numpy block {k}")
        if k < len(b):
            assert_same(b[k], want_b[k], f"torch block {k}")
    assert a.item_loader is not loader and b.item_loader is not a.item_loader
    assert loader.block_size == BLOCK_SIZE and not hasattr(loader, "_formats")  # the description is untouched


def _leaf_span(dataset: str, field: str) -> tuple[Path, int, int, str]:
    """(chunk file, start, end, format) of leaf ``field`` of item 0 in the dataset's first chunk."""
    from lit_streaming.format import pytree

    config = json.loads(Path(dataset, "index.json").read_text())
    leaf = pytree.spec_leaf_paths(pytree.loads(config["config"]["data_spec"])).index(field)
    chunk = Path(dataset, config["chunks"][0]["filename"])
    raw = chunk.read_bytes()
    (n,) = struct.unpack_from("<I", raw)
    item = struct.unpack_from("<I", raw, 4)[0]
    num_leaves = len(config["config"]["data_format"])
    sizes = struct.unpack_from(f"<{num_leaves}I", raw, item)
    start = item + 4 * num_leaves + sum(sizes[:leaf])
    return chunk, start, start + sizes[leaf], config["config"]["data_format"][leaf]


@pytest.mark.parametrize(
    ("field", "junk"),
    [
        ("['text']", b"\xff"),
        ("['image']['path']", b"\x00"),
        ("['bbox']", b"\x09"),
        ("['np']['f32']", b"\x80"),
    ],
)
def test_a_damaged_leaf_names_dataset_chunk_item_and_leaf(litdata_run, tmp_path, field, junk):
    """LitData's datasets have no checksums: a flipped leaf must fail with CorruptChunkError saying where."""
    from lit_streaming.format.chunk import CorruptChunkError

    copy = tmp_path / "damaged"
    shutil.copytree(litdata_run.dataset("media"), copy)
    chunk, start, end, fmt = _leaf_span(str(copy), field)
    raw = bytearray(chunk.read_bytes())
    raw[start:end] = junk * (end - start)
    chunk.write_bytes(bytes(raw))
    ds = StreamingDataset(str(copy))
    with pytest.raises(CorruptChunkError) as info:
        ds[0]
    message = str(info.value)
    for part in (chunk.name, str(copy), "item 0", field, repr(fmt)):
        assert part in message, (part, message)
    assert ds[1]["id"] == 1  # only that item is damaged


def _mixed_extension_image(i: int, media: dict[str, str]) -> dict[str, Any]:
    from lit_streaming.format.serializers import Image as OurImage

    return {"id": i, "image": OurImage(path=media["a.png"] if i % 2 else media["j0.jpg"])}


def test_images_of_different_file_types_share_a_column(tmp_path, media):
    """A folder of .jpg and .png files: the column keeps the first sample's 'image:jpg' (as LitData's writer
    does) and both readers decode every file."""
    fn = functools.partial(_mixed_extension_image, media=media)
    out = optimize(fn, list(range(4)), str(tmp_path / "mixed-ext"), chunk_size=4, num_workers=1)
    assert json.loads(Path(out, "index.json").read_text())["config"]["data_format"] == ["int", "image:jpg"]
    for k, (got, lit) in enumerate(zip(read_ours(out), read_litdata(out), strict=True)):
        want = _pixels(media["a.png"]) if k % 2 else decode_jpeg_file(media["j0.jpg"])
        assert_same(got["image"], want, f"our sample {k}")
        assert_same(lit["image"], want, f"LitData sample {k}")


def test_an_unknown_leaf_names_itself_and_the_index(litdata_run, tmp_path):
    from lit_streaming.format.serializers import UnknownSerializerError

    copy = tmp_path / "unknown-leaf"
    shutil.copytree(litdata_run.dataset("media"), copy)
    index = json.loads((copy / "index.json").read_text())
    index["config"]["data_format"][1] = "hologram:3d"
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(UnknownSerializerError, match=r"unknown-leaf/index.json.*'hologram:3d'"):
        StreamingDataset(str(copy))


def test_pytree_loader_options_travel_with_the_bound_copy(litdata_run):
    """``PyTreeLoader(decode=...)`` is a description too: each dataset's bound reader decodes video as asked,
    the object the user passed stays unset-up."""
    from lit_streaming.item_loaders import PyTreeLoader

    with pytest.raises(ValueError, match="unknown media kinds"):
        PyTreeLoader(decode={"hologram": "decode"})
    loader = PyTreeLoader(decode={"video": "decode"})
    ds = StreamingDataset(litdata_run.dataset("media"), item_loader=loader)
    assert ds.item_loader is not loader and ds.item_loader.decode == {"video": "decode"}
    try:
        import torchcodec  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match="torchcodec"):
            ds[0]
    plain = StreamingDataset(litdata_run.dataset("media"), item_loader=PyTreeLoader())
    assert isinstance(plain[0]["video"], bytes)


def test_litdata_pickled_objects_are_refused_when_read_naming_the_leaf(litdata_run):
    """LitData pickles numpy scalars and arbitrary objects alike, so its datasets open without allow_pickle;
    the first leaf that needs more than numpy is refused when read, naming chunk, item and leaf."""
    from fractions import Fraction

    from lit_streaming.format.serializers import PickleNotAllowedError

    path = litdata_run.dataset("pickled")
    assert json.loads(Path(path, "index.json").read_text())["config"]["data_format"] == [
        "int",
        "pickle",
        "pickle",
    ]
    ds = StreamingDataset(path)
    with pytest.raises(
        PickleNotAllowedError, match=r"chunk-0-0.bin.*item 0 leaf \['ratio'\].*fractions.Fraction"
    ):
        ds[0]
    trusted = StreamingDataset(path, allow_pickle=True)
    for i in range(4):
        got = trusted[i]
        assert type(got["score"]) is np.float32 and got["score"] == np.float32(got["id"] / 4)
        assert got["ratio"] == Fraction(got["id"], 3)
