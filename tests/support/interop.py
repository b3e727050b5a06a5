"""Samples shared by the interop tests and ``litdata_writer.py`` (runs ``litdata.optimize`` in a subprocess).

Every sample is a pure function of its input index, so either library can write it and the tests can rebuild
the expected value. Keep this module free of test-only imports: LitData's spawned workers import it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image

N_MIXED = 10
N_TOKENS = 40
BLOCK_SIZE = 8
TOKEN_CHUNK_SIZE = 50  # tokens per chunk (at most)

NUMPY_DTYPES = ("uint8", "int32", "int64", "float16", "float32", "float64")
TORCH_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


def _array(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return np.asarray(rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True))


def _tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if name == "bool":
        return torch.from_numpy(np.asarray(rng.integers(0, 2, shape)).astype(bool))
    if name == "bfloat16":
        return torch.from_numpy(np.asarray(rng.standard_normal(shape), dtype=np.float32)).to(torch.bfloat16)
    return torch.from_numpy(_array(rng, name, shape).copy())


def make_jpegs(folder: str) -> dict[str, Any]:
    """JPEG files: two RGB, one grayscale, one RGB whose EXIF says 'rotate 90' (orientation 6)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(7)
    paths: dict[str, Any] = {"rgb": []}
    for k, (w, h) in enumerate([(24, 16), (17, 21)]):
        path = os.path.join(folder, f"rgb{k}.jpg")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        paths["rgb"].append(path)
    paths["gray"] = os.path.join(folder, "gray.jpg")
    Image.fromarray(rng.integers(0, 256, (12, 20), dtype=np.uint8), mode="L").save(paths["gray"])
    paths["exif"] = os.path.join(folder, "exif.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (10, 30, 3), dtype=np.uint8)).save(paths["exif"], exif=exif)
    return paths


def mixed_sample(i: int, jpegs: dict[str, Any], writer: str = "ours") -> dict[str, Any]:
    """One sample holding every leaf kind of the interop matrix, nested at several depths.

    ``writer="ours"`` adds leaves LitData's writer cannot produce (bfloat16 tensors), so that only the
    ours -> LitData direction carries them.
    """
    rng = np.random.default_rng(1000 + i)
    n = 1 + i % 4  # 1-D lengths vary per sample (never 0: LitData cannot read an empty 1-D tensor)
    tensors = {f"{name}_0d": _tensor(rng, name, ()) for name in ("float32", "int64", "float64")}
    tensors.update({f"{name}_1d": _tensor(rng, name, (n,)) for name in TORCH_DTYPES})
    tensors.update({f"{name}_2d": _tensor(rng, name, (n, 3)) for name in TORCH_DTYPES})
    if writer == "ours":
        tensors["bfloat16_1d"] = _tensor(rng, "bfloat16", (n,))
        tensors["bfloat16_2d"] = _tensor(rng, "bfloat16", (2, n))
    numpy = {f"{dt}_1d": _array(rng, dt, (n,)) for dt in NUMPY_DTYPES}
    numpy.update({f"{dt}_2d": _array(rng, dt, (n, 2)) for dt in NUMPY_DTYPES})
    numpy.update({f"{dt}_3d": _array(rng, dt, (2, n, 3)) for dt in NUMPY_DTYPES})
    w, h = 5 + i, 3 + i % 3
    return {
        "id": i,
        "int": (i - 4) * 1_000_000_007,  # negative and beyond 32 bits
        "float": i / 7 - 0.5,
        "str": f"sample {i} ünïcødé ✓",
        "bool": i % 3 == 0,
        "bytes": bytes(rng.integers(0, 256, n, dtype=np.uint8)),
        "numpy": numpy,
        "tensor": tensors,
        "pil": {
            "rgb": Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB"),
            "l": Image.fromarray(rng.integers(0, 256, (h + 1, w), dtype=np.uint8), mode="L"),
        },
        "jpeg": {
            "rgb": Image.open(jpegs["rgb"][i % 2]),
            "gray": Image.open(jpegs["gray"]),
            "exif": Image.open(jpegs["exif"]),
        },
        # Lists and tuples mixing JSON scalars with arrays: both writers flatten them into pytree leaves.
        "nested": {
            "list": [i, np.arange(n, dtype=np.int64), [f"x{i}", torch.full((2, 2), i, dtype=torch.int32)]],
            "tuple": (float(i), ("t", _array(rng, "float32", (n,)))),
            "dict": {"a": {"b": {"c": torch.tensor([i, -i])}}, "d": i % 2 == 1},
        },
    }


def json_list_sample(i: int) -> dict[str, Any]:
    """Lists made only of JSON scalars: LitData 0.2.76 stores each such list as one 'json' leaf."""
    return {"id": i, "ints": [i, i + 1, i + 2], "strs": [f"a{i}", "b"], "nested": {"k": [float(i)]}}


def token_lengths(n: int = N_TOKENS) -> list[int]:
    return [1 + (k * 7) % 23 for k in range(n)]


def token_record(i: int, kind: str = "numpy") -> Any:
    """Record ``i`` of a token stream whose tokens count up (0, 1, 2, ...), so every block is recognisable."""
    lengths = token_lengths(i + 1)
    start = sum(lengths[:i])
    values = np.arange(start, start + lengths[i])
    if kind == "numpy":
        return values.astype(np.uint16)
    return torch.from_numpy(values.astype(np.int64))


# ---- every other leaf kind ---------------------------------------------------------------------------------
N_MEDIA = 6


def make_media(folder: str) -> dict[str, str]:
    """Media files of every kind LitData's wrappers store as they are (video/audio/... need not be playable:
    both libraries store and return their bytes)."""
    import wave

    import tifffile

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(11)
    paths = {
        name: os.path.join(folder, name) for name in ("a.png", "a.tif", "clip.mp4", "a.wav", "notes.txt")
    }
    Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)).save(paths["a.png"])
    tifffile.imwrite(paths["a.tif"], rng.integers(0, 2**16, (5, 7), dtype=np.uint16))
    with open(paths["clip.mp4"], "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(range(64)))
    with wave.open(paths["a.wav"], "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.arange(64, dtype=np.int16).tobytes())
    with open(paths["notes.txt"], "w") as f:
        f.write("some notes ✓\n")
    for k in range(2):
        paths[f"j{k}.jpg"] = os.path.join(folder, f"j{k}.jpg")
        Image.fromarray(rng.integers(0, 256, (6 + k, 10, 3), dtype=np.uint8)).save(paths[f"j{k}.jpg"])
    for name, data in (
        ("a.pdf", b"%PDF-1.4\n%fake\n"),
        ("a.glb", b"glTF\x02\x00\x00\x00"),
        ("a.nii", b"\x5c\x01" * 8),
    ):
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths


def _wrappers(writer: str) -> Any:
    if writer == "litdata":
        import litdata

        return litdata
    from lit_streaming.format import serializers

    return serializers


def image_pixels(i: int) -> np.ndarray:
    return np.random.default_rng(500 + i).integers(0, 256, (4 + i % 3, 6, 3), dtype=np.uint8)


def media_sample(i: int, media: dict[str, str], writer: str = "ours") -> dict[str, Any]:
    """Image, TIFF, video, audio, text and file leaves through the wrapper types, numpy scalars and JSON
    lists (of varying length) in one dict sample. Both writers store the same leaves."""
    w = _wrappers(writer)
    with open(media["a.png"], "rb") as f:
        png = f.read()
    return {
        "id": i,
        "image": {
            "path": w.Image(path=media["a.png"]),
            "bytes": w.Image(bytes=png),
            "jpeg": w.Image(array=image_pixels(i), format="jpeg", quality=90),
            "gray": w.Image(path=media["a.png"], mode="L"),
        },
        "tiff": w.Tiff(array=np.full((2, 3), i, dtype=np.uint16)) if writer == "ours" else media["a.tif"],
        "video": w.Video(path=media["clip.mp4"]),
        "audio": w.Audio(path=media["a.wav"]),
        "text": w.Text(text=f"caption {i} ✓"),
        "file": w.File(path=media["notes.txt"]),
        "np": {
            "f32": np.float32(i / 3),
            "i64": np.int64(i - 2),
            "u8": np.uint8(200 + i),
            "b": np.bool_(i % 2 == 0),
            "f16": np.float16(i / 4),
        },
        "tags": [f"t{k}" for k in range(i % 3)],
        "bbox": [i, i + 1.5, -2, 4],
        "meta": {"scores": [0.5 * k for k in range(i)], "rows": [{"k": "a", "v": i}, {"k": "b", "v": None}]},
    }


def litdata_only_sample(i: int, media: dict[str, str]) -> dict[str, Any]:
    """Leaves only LitData writes: its Tiff wrapper ('tiff'), JpegArray, Graph, PDF, mesh and NIfTI files.
    LitData itself reads the last three only with pdfplumber / trimesh / nibabel; ours returns their bytes."""
    import litdata
    import torch as _torch

    return {
        "id": i,
        "tiff": litdata.Tiff(array=np.full((3, 2), i, dtype=np.uint8)),
        "jpegs": litdata.JpegArray(images=[Image.open(media["j0.jpg"]), Image.open(media["j1.jpg"])]),
        "graph": litdata.Graph(x=_torch.full((3, 2), float(i)), edge_index=_torch.tensor([[0, 1], [1, 2]])),
        "pdf": litdata.Pdf(path=media["a.pdf"]),
        "mesh": litdata.Mesh(path=media["a.glb"]),
        "nifti": litdata.Nifti(path=media["a.nii"]),
    }


def pickled_sample(i: int) -> dict[str, Any]:
    """A numpy scalar (LitData pickles it; safe to read) next to an object only a real unpickle rebuilds."""
    from fractions import Fraction

    return {"id": i, "score": np.float32(i / 4), "ratio": Fraction(i, 3)}
