"""Leaf serializers: round trips, byte equality with LitData 0.2.76 in both directions, bad input."""

from __future__ import annotations

import io
import math
import pickle
import struct
import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from litdata.streaming import serializers as lit
from PIL import Image

from lit_streaming.format import serializers as serializers_module
from lit_streaming.format.serializers import (
    SERIALIZER_ORDER,
    JsonLeaf,
    PickleNotAllowedError,
    UnknownSerializerError,
    same_column,
    serialize_leaf,
    serializer_for,
    serializer_named,
)
from lit_streaming.format.serializers import Image as Img
from lit_streaming.format.serializers import Text as Txt
from lit_streaming.format.serializers import Tiff as Tif

# LitData's own decode path warns (torchvision deprecation, non-writable numpy); ours must not.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:The given NumPy array")


def deserialize_leaf(data: Any, fmt: str, allow_pickle: bool = False) -> Any:
    """Decode one leaf as a reader does: the serializer named by its stored format."""
    return serializer_named(fmt, allow_pickle=allow_pickle).deserialize(data, fmt)


def lit_choice(obj: Any) -> str:
    """The serializer LitData's writer would pick for ``obj``."""
    return next(name for name, s in lit._SERIALIZERS.items() if s.can_serialize(obj))


def lit_serialize(obj: Any) -> tuple[bytes, str]:
    name = lit_choice(obj)
    data, fmt = lit._SERIALIZERS[name].serialize(obj)
    return bytes(data), fmt or name


def lit_deserialize(data: bytes, fmt: str) -> Any:
    serializer = lit._get_serializers(None)[fmt.partition(":")[0]]
    serializer.setup(fmt)
    return serializer.deserialize(data)


def assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    elif isinstance(a, Image.Image):
        assert (a.mode, a.size, a.tobytes()) == (b.mode, b.size, b.tobytes())
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def check_interop(obj: Any, expect_fmt: str | None = None) -> Any:
    """Same bytes and format as LitData; each side decodes the other's bytes to the same value."""
    ours, fmt = serialize_leaf(obj)
    theirs, lit_fmt = lit_serialize(obj)
    assert (bytes(ours), fmt) == (theirs, lit_fmt)
    if expect_fmt is not None:
        assert fmt == expect_fmt
    decoded = deserialize_leaf(memoryview(theirs), fmt, allow_pickle=True)
    assert_same(decoded, lit_deserialize(bytes(ours), fmt))
    return decoded


SCALARS = [0, -1, 2**63 - 1, -(2**63), 0.0, -1.5, float("inf"), float("nan"), np.float64(2.5)]
SCALARS += ["", "héllo ✓", True, False, b"", b"\x00\xff"]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalars_match_litdata(value: Any) -> None:
    decoded = check_interop(value, type(value).__name__ if type(value) is not np.float64 else "float")
    assert_same(decoded, float(value) if isinstance(value, float) else value)


def test_int_out_of_range_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="int64"):
        serialize_leaf(2**63)


NP_DTYPES = [np.uint8, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_, np.complex64]
NP_INDEX = {np.dtype(t): i for t, i in zip(NP_DTYPES, [4, 2, 3, 8, 9, 10, 13, 11], strict=True)}


@pytest.mark.parametrize("dtype", NP_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(5,), (0,), (2, 3), (2, 3, 4), (0, 3)], ids=str)
def test_numpy_matches_litdata(dtype: Any, shape: tuple[int, ...]) -> None:
    array = (np.arange(math.prod(shape)) % 7).astype(dtype).reshape(shape)
    expect_fmt = f"no_header_numpy:{NP_INDEX[np.dtype(dtype)]}" if len(shape) == 1 else "numpy"
    assert_same(check_interop(array, expect_fmt), array)


def test_numpy_non_contiguous_and_big_endian() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4).T
    assert_same(check_interop(array), np.ascontiguousarray(array))
    big = np.arange(6, dtype=">i4").reshape(2, 3)  # LitData has no index for it; we store little-endian
    data, fmt = serialize_leaf(big)
    assert (bytes(data), fmt) == serialize_leaf(big.astype("<i4"))
    assert_same(lit_deserialize(bytes(data), fmt), big.astype(np.int32))


def test_numpy_zero_dim_is_stored_as_numpy_and_litdata_reads_it() -> None:
    # LitData pickles 0-d arrays; we use the numpy layout so reading needs no allow_pickle.
    scalar = np.array(3.5, dtype=np.float32)
    data, fmt = serialize_leaf(scalar)
    assert fmt == "numpy" and lit_choice(scalar) == "pickle"
    assert_same(deserialize_leaf(data, fmt), scalar)
    assert_same(lit_deserialize(bytes(data), fmt), scalar)


def test_numpy_without_raw_encoding_falls_back_to_pickle() -> None:
    for obj in (np.array([{"a": 1}, None], dtype=object), np.array(["ab", "c"]), np.void(b"ab")):
        assert serializer_for(obj).name == "pickle"


TORCH_DTYPES = [torch.float32, torch.int64, torch.uint8, torch.bfloat16, torch.float16]
LIT_INDEX = {torch.float32: 1, torch.int64: 18, torch.uint8: 11, torch.bfloat16: 10, torch.float16: 9}


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (0,), (0, 3), (2, 1, 3)], ids=str)
def test_tensor_matches_litdata(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    tensor = (torch.arange(math.prod(shape)) % 7).to(dtype).reshape(shape)
    expect_fmt = f"no_header_tensor:{LIT_INDEX[dtype]}" if len(shape) == 1 else "tensor"
    if dtype is torch.bfloat16:
        # LitData cannot write bfloat16 (its tensor.numpy() call fails) but reads it fine.
        with pytest.raises(TypeError):
            lit_serialize(tensor)
        data, fmt = serialize_leaf(tensor)
        assert fmt == expect_fmt
        assert_same(lit_deserialize(bytes(data), fmt), tensor)
        decoded = deserialize_leaf(data, fmt)
    else:
        decoded = check_interop(tensor, expect_fmt)
    assert_same(decoded, tensor)


def test_tensor_header_is_big_endian_and_aliases_are_written() -> None:
    data, fmt = serialize_leaf(torch.zeros(2, 3, dtype=torch.int32))
    assert data[:20] == struct.pack(">5I", 16, 2, 2, 3, 0)[:20]
    assert serialize_leaf(torch.zeros(3, dtype=torch.int32))[1] == "no_header_tensor:16"


def test_tensor_reads_little_endian_header_and_non_alias_indices() -> None:
    expected = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    old = struct.pack("<4I", 17, 2, 2, 3) + expected.numpy().tobytes()
    assert_same(deserialize_leaf(old, "tensor"), expected)
    flat = expected.reshape(-1)
    assert_same(deserialize_leaf(flat.numpy().tobytes(), "no_header_tensor:17"), flat)
    zero_dim = struct.pack("<2I", 0, 0) + struct.pack("<f", 2.0)  # all-zero header: both orders agree
    assert_same(deserialize_leaf(zero_dim, "tensor"), torch.tensor(2.0))


def test_tensor_odd_inputs() -> None:
    grad = torch.ones(2, 2, requires_grad=True)
    assert_same(deserialize_leaf(*serialize_leaf(grad)), torch.ones(2, 2))
    strided = torch.arange(12, dtype=torch.float32).reshape(3, 4).T
    assert_same(check_interop(strided), strided.contiguous())
    assert_same(check_interop(strided[0]), strided[0].contiguous())
    assert serializer_for(torch.zeros(2, dtype=torch.uint32)).name == "pickle"
    assert serializer_for(torch.zeros(2, 2).to_sparse()).name == "pickle"


def test_deserialize_is_zero_copy_and_silent() -> None:
    buffer = bytearray(serialize_leaf(torch.zeros(2, 2))[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = deserialize_leaf(memoryview(bytes(buffer)), "tensor")
        shared = deserialize_leaf(memoryview(buffer), "tensor")
    assert tensor.shape == (2, 2)
    buffer[-4:] = struct.pack("<f", 7.0)
    assert shared[1, 1].item() == 7.0
    raw = bytearray(np.arange(4, dtype=np.int32).tobytes())
    array = deserialize_leaf(memoryview(raw), "no_header_numpy:2")
    raw[:4] = struct.pack("<i", 9)
    assert array[0] == 9


def test_decoding_touches_no_process_wide_warning_filters(tmp_path: Any, monkeypatch: Any) -> None:
    """``catch_warnings`` rewrites the process-wide filter list (not thread-safe): no decode may enter it,
    and none may warn either (torch's non-writable buffer warning, torchvision's deprecation)."""
    with Image.open(_jpeg(tmp_path, "RGB")) as image:
        jpeg = bytes(serialize_leaf(image)[0])
    png = io.BytesIO()
    Image.new("RGB", (5, 4), (1, 2, 3)).save(png, format="PNG")
    leaves = [
        (jpeg, "jpeg"),
        (png.getvalue(), "image:png"),
        (serialize_leaf(torch.ones(2, 3))[0], "tensor"),
        (serialize_leaf(torch.arange(5))[0], "no_header_tensor:18"),
    ]

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a decode entered warnings.catch_warnings")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.setattr(warnings, "catch_warnings", refuse)
        try:
            for data, fmt in leaves:
                for buffer in (bytes(data), memoryview(bytearray(data)), memoryview(bytes(data))):
                    assert deserialize_leaf(buffer, fmt).numel()
        finally:
            monkeypatch.undo()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "1", "P", "I", "F", "I;16", "LA", "CMYK"])
def test_pil_matches_litdata(mode: str) -> None:
    image = Image.effect_mandelbrot((13, 7), (-2, -1, 1, 1), 30).convert(mode)
    decoded = check_interop(image, "pil")
    assert_same(decoded, image)


def test_pil_png_file_is_pil(tmp_path: Any) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 3), (1, 2, 3)).save(path)
    with Image.open(path) as image:
        assert serializer_for(image).name == "pil"
        assert_same(check_interop(image), image.convert("RGB"))


def _jpeg(tmp_path: Any, mode: str, size: tuple[int, int] = (40, 24), **save: Any) -> Any:
    path = tmp_path / f"{mode}.jpg"
    Image.effect_mandelbrot(size, (-2, -1, 1, 1), 30).convert(mode).save(path, quality=90, **save)
    return path


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_file_matches_litdata(tmp_path: Any, mode: str) -> None:
    path = _jpeg(tmp_path, mode)
    with Image.open(path) as image:
        assert serializer_for(image).name == "jpeg"
        data, fmt = serialize_leaf(image)
        decoded = check_interop(image, "jpeg")
    assert bytes(data) == path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deserialize_leaf(memoryview(data), "jpeg")
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 24, 40)  # grayscale expands to RGB


def test_jpeg_exif_orientation_matches_litdata(tmp_path: Any) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = _jpeg(tmp_path, "RGB", exif=exif.tobytes())
    with Image.open(path) as image:
        decoded = check_interop(image, "jpeg")
    assert decoded.shape == (3, 40, 24)


def test_jpeg_in_memory_is_reencoded_like_litdata(tmp_path: Any) -> None:
    with Image.open(io.BytesIO(_jpeg(tmp_path, "RGB").read_bytes())) as image:
        check_interop(image, "jpeg")


def test_jpeg_decode_falls_back_for_non_jpeg_bytes() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), (10, 20, 30)).save(buffer, format="PNG")
    decoded = deserialize_leaf(buffer.getvalue(), "jpeg")
    assert_same(decoded, lit_deserialize(buffer.getvalue(), "jpeg"))
    assert decoded[:, 0, 0].tolist() == [10, 20, 30]


PICKLES = [bytearray(b"ab"), slice(1, 2), Fraction(1, 3), {"a": (1, 2), "b": {3}, "c": Fraction(2)}]


@pytest.mark.parametrize("obj", PICKLES, ids=repr)
def test_pickle_matches_litdata_and_needs_opt_in(obj: Any) -> None:
    assert check_interop(obj, "pickle") == obj
    data, _ = serialize_leaf(obj)
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True") as info:
        deserialize_leaf(data, "pickle")
    assert "arbitrary code" in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(PickleNotAllowedError):
        serializer_named("pickle").deserialize(data, "pickle")


def test_order_and_names() -> None:
    assert SERIALIZER_ORDER[0] == "str" and SERIALIZER_ORDER[-1] == "pickle"
    for name in SERIALIZER_ORDER:
        assert serializer_named(name if "no_header" not in name else f"{name}:1").name == name
    assert serializer_for(True).name == "bool" and serializer_for(np.float64(1)).name == "float"
    # Serializers travel to DataLoader workers.
    restored = pickle.loads(pickle.dumps(serializer_named("tensor")))
    assert_same(restored.deserialize(serialize_leaf(torch.ones(2, 2))[0], "tensor"), torch.ones(2, 2))


@pytest.mark.parametrize(
    "fmt",
    [
        "imagez:jpg",
        "jsonx",
        "no_header_numpy",
        "no_header_numpy:99",
        "no_header_numpy:14",
        "int:3",
        "",
        "a:b:c",
    ],
)
def test_unknown_formats_are_named(fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown serializer|no raw encoding") as info:
        deserialize_leaf(b"", fmt)
    assert repr(fmt) in str(info.value) or "14" in str(info.value)
    if fmt != "no_header_numpy:14":
        assert isinstance(info.value, UnknownSerializerError)


CORRUPT = [
    (b"\x00" * 7, "int"),
    (b"\x00\x01", "bool"),
    (b"\x00" * 9, "float"),
    (b"\x00" * 3, "no_header_numpy:2"),
    (b"\x00" * 3, "no_header_tensor:1"),
    (struct.pack("<4I", 2, 2, 3, 3) + b"\x00" * 8, "numpy"),
    (struct.pack("<4I", 2, 2, 2**31, 2**31), "numpy"),  # would be a 16 EiB allocation
    (struct.pack("<2I", 2, 1000), "numpy"),
    (struct.pack(">4I", 1, 2, 3, 3) + b"\x00" * 8, "tensor"),
    (struct.pack(">4I", 1, 2, 2**31, 2**31), "tensor"),
    (b"\x00" * 5, "tensor"),
    (struct.pack("<3I", 60000, 60000, 3) + b"RGB", "pil"),
    (struct.pack("<3I", 1, 1, 3) + b"XYZ\x00", "pil"),
    (struct.pack("<3I", 1, 1, 99) + b"RGB", "pil"),
]


@pytest.mark.parametrize(("data", "fmt"), CORRUPT, ids=lambda v: v if isinstance(v, str) else None)
def test_corrupt_payloads_raise_value_error(data: bytes, fmt: str) -> None:
    with pytest.raises(ValueError):
        deserialize_leaf(memoryview(data), fmt)


# ---- json (LitData 0.2.76's tagged encoding) ---------------------------------------------------------------
JSON_VALUES = [
    [1, 2, 3],
    ["a", "ünï ✓", ""],
    [1.5, -0.0, float("inf")],
    [True, False],
    [],
    [{"a": 1, "b": "x"}, {"b": None, "a": 2.0}],  # records: keys once, rows in the first row's key order
    [{"a": [1]}, {"a": 2}],  # rows that are not flat records fall back to JSON text
    {"k": [1, "a", None], "z": {"q": True}},
    [1, "a", [2, None]],
    [2**70],  # beyond int64: JSON text
]


def lit_json_bytes(value: Any) -> bytes:
    return bytes(lit._SERIALIZERS["json"].serialize(lit.JsonLeaf(value))[0])


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_json_matches_litdata_bytes_both_ways(value: Any) -> None:
    data, fmt = serialize_leaf(JsonLeaf(value))
    assert fmt == "json" and bytes(data) == lit_json_bytes(value)
    ours = deserialize_leaf(memoryview(data), "json")
    assert ours == lit_deserialize(bytes(data), "json")
    assert ours == value  # (records come back in the first row's key order, as LitData returns them)


def test_json_reads_legacy_text_and_rejects_corruption() -> None:
    assert deserialize_leaf(b'{"a": [1, 2]}', "json") == {"a": [1, 2]}
    good = bytes(serialize_leaf(JsonLeaf(["abc", "de"]))[0])
    for bad in (
        good[:-1],
        good + b"\x00",
        b"\x02" + struct.pack("<I", 10**9),
        b"\x06" + b"\x00" * 3,
        b"\x0f",
        b"\x06" + struct.pack("<II", 2**32 - 1, 0),  # 4 billion key-less records in 9 bytes
        b"\x06" + struct.pack("<III", 10**6, 1, 1) + b"k" + b"\x10" * 5,  # a million rows, 5 bytes
    ):
        with pytest.raises(ValueError):
            deserialize_leaf(bad, "json")
    deep = b"".join(b"\x05" + struct.pack("<I", 1) + struct.pack("<I", 1) + b"k" for _ in range(500))
    with pytest.raises(ValueError, match="nests deeper"):
        deserialize_leaf(deep + b"\x0b", "json")


def test_only_json_leaf_markers_are_written_as_json() -> None:
    assert serializer_for([1, 2]).name == "pickle"  # a bare list never reaches the serializers from a pytree
    assert serializer_for(JsonLeaf([1, 2])).name == "json"


# ---- numpy scalars -----------------------------------------------------------------------------------------
NP_SCALARS = [np.float32(1.5), np.int64(-3), np.uint8(7), np.bool_(True), np.float16(0.25), np.complex64(1j)]


@pytest.mark.parametrize("value", NP_SCALARS, ids=repr)
def test_numpy_scalars_are_not_pickled_and_litdata_reads_them(value: Any) -> None:
    data, fmt = serialize_leaf(value)
    assert fmt == "numpy:scalar" and lit_choice(value) == "pickle"
    got = deserialize_leaf(memoryview(data), fmt)
    assert type(got) is type(value) and got == value
    theirs = lit_deserialize(bytes(data), fmt)  # LitData reads our leaf through its numpy serializer
    assert isinstance(theirs, np.ndarray) and theirs.shape == () and theirs.dtype == value.dtype
    assert theirs[()] == value


@pytest.mark.parametrize("value", [*NP_SCALARS, np.array(2.5), np.arange(6, dtype=np.int16).reshape(2, 3)])
def test_litdata_pickled_numpy_needs_no_opt_in(value: Any) -> None:
    theirs, fmt = lit_serialize(value) if lit_choice(value) == "pickle" else (pickle.dumps(value), "pickle")
    assert fmt == "pickle"
    got = deserialize_leaf(memoryview(theirs), "pickle")
    assert type(got) is type(value) and np.array_equal(got, value)


@pytest.mark.parametrize(
    "obj", [Fraction(1, 2), np.array([{"x": 1}], dtype=object), [np.float32(1), Fraction(1)]], ids=repr
)
def test_restricted_unpickler_refuses_everything_else(obj: Any) -> None:
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
        deserialize_leaf(pickle.dumps(obj), "pickle")
    assert repr(deserialize_leaf(pickle.dumps(obj), "pickle", allow_pickle=True)) == repr(obj)


def test_restricted_unpickler_never_runs_reduce_of_unknown_globals(tmp_path: Any) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with pytest.raises(PickleNotAllowedError, match="io.open|builtins.open"):
        deserialize_leaf(pickle.dumps(Evil()), "pickle")
    assert not marker.exists()


# ---- media leaves ------------------------------------------------------------------------------------------
def _png_bytes(size: tuple[int, int] = (6, 4), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.effect_mandelbrot(size, (-2, -1, 1, 1), 30).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _lit_write(obj: Any) -> tuple[bytes, str]:
    """What LitData's writer stores for ``obj``: the first serializer that accepts it, and its format name."""
    return lit_serialize(obj)


def test_image_wrapper_leaves_match_litdata(tmp_path: Any) -> None:
    import litdata

    path = tmp_path / "a.png"
    path.write_bytes(_png_bytes())
    pixels = np.asarray(Image.open(path).convert("RGB"))
    cases = [
        (Img(path=str(path)), litdata.Image(path=str(path))),
        (Img(bytes=path.read_bytes()), litdata.Image(bytes=path.read_bytes())),
        (
            Img(array=pixels, format="jpeg", quality=95),
            litdata.Image(array=pixels, format="jpeg", quality=95),
        ),
        (Img(image=Image.open(path), format="webp"), litdata.Image(image=Image.open(path), format="webp")),
        (Img(path=str(path), mode="L"), litdata.Image(path=str(path), mode="L")),
    ]
    for ours_obj, lit_obj in cases:
        data, fmt = serialize_leaf(ours_obj)
        assert (bytes(data), fmt) == _lit_write(lit_obj)
        assert (bytes(serialize_leaf(lit_obj)[0]), serialize_leaf(lit_obj)[1]) == (bytes(data), fmt)
        decoded = deserialize_leaf(memoryview(data), fmt)
        assert_same(decoded, lit_deserialize(bytes(data), fmt))
        assert decoded.dtype == torch.uint8 and decoded.shape[0] == 3


def test_image_leaf_of_every_format_decodes_like_litdata(tmp_path: Any) -> None:
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP"):
        buffer = io.BytesIO()
        Image.effect_mandelbrot((7, 5), (-2, -1, 1, 1), 30).convert("RGB").save(buffer, format=fmt)
        name = f"image:{fmt.lower()}"
        ours = deserialize_leaf(memoryview(buffer.getvalue()), name)
        assert ours.shape == (3, 5, 7) and ours.dtype == torch.uint8
        if (
            fmt != "BMP"
        ):  # torchvision cannot decode BMP, so LitData's reader fails on it; ours falls back to PIL
            assert_same(ours, lit_deserialize(buffer.getvalue(), name))


def test_jpeg_array_and_graph_leaves_written_by_litdata(tmp_path: Any) -> None:
    import litdata

    paths = []
    for k in range(2):
        paths.append(tmp_path / f"{k}.jpg")
        Image.effect_mandelbrot((8 + k, 6), (-2, -1, 1, 1), 30).convert("RGB").save(paths[-1])
    data, fmt = _lit_write([Image.open(p) for p in paths])
    assert fmt == "jpeg_array"
    ours = deserialize_leaf(memoryview(data), fmt)
    theirs = lit_deserialize(data, fmt)
    assert len(ours) == 2 and all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))

    graph = litdata.Graph(x=torch.arange(6.0).reshape(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
    data, fmt = _lit_write(graph)
    assert fmt == "graph"
    got = deserialize_leaf(memoryview(data), fmt)
    assert set(got) == {"x", "edge_index"} and torch.equal(got["x"], graph.x)
    assert torch.equal(got["edge_index"], graph.edge_index)
    with pytest.raises(ValueError):
        deserialize_leaf(data[:-3], fmt)


def test_tiff_leaves_match_litdata(tmp_path: Any) -> None:
    import litdata
    import tifffile

    array = (np.arange(24, dtype=np.uint16) * 1000).reshape(4, 6)
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, array)
    for obj in (str(path), litdata.Tiff(path=str(path)), litdata.Tiff(array=array)):
        data, fmt = _lit_write(obj)
        assert fmt in ("tifffile", "tiff")
        assert_same(deserialize_leaf(memoryview(data), fmt), array)
    data, fmt = serialize_leaf(Tif(path=str(path)))
    assert fmt == "tifffile" and bytes(data) == path.read_bytes()  # the name LitData can read back
    assert_same(lit_deserialize(bytes(data), fmt), array)
    data, fmt = serialize_leaf(Tif(array=array))
    assert_same(lit_deserialize(bytes(data), fmt), array)
    assert_same(deserialize_leaf(data, fmt), array)


@pytest.mark.parametrize(
    ("kind", "ext", "ours_cls"),
    [("video", "mp4", "Video"), ("audio", "wav", "Audio"), ("file", "bin", "File")],
)
def test_media_file_leaves_are_bytes_like_litdata_writes_them(
    tmp_path: Any, kind: str, ext: str, ours_cls: str
):
    import litdata

    path = tmp_path / f"clip.{ext}"
    path.write_bytes(b"\x00\x01 media bytes")
    data, fmt = _lit_write(getattr(litdata, ours_cls)(path=str(path)))
    assert (bytes(data), fmt) == (path.read_bytes(), f"{kind}:{ext}")
    assert deserialize_leaf(memoryview(data), fmt) == path.read_bytes()
    mine = getattr(serializers_module, ours_cls)(path=str(path))
    assert (bytes(serialize_leaf(mine)[0]), serialize_leaf(mine)[1]) == (bytes(data), fmt)


def test_media_decode_needs_its_library() -> None:
    video = serializer_named("video:mp4", decode={"video": "decode"})
    try:
        import torchcodec  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match="torchcodec"):
            video.deserialize(b"not a video", "video:mp4")
    with pytest.raises(ValueError, match="decode mode"):
        serializer_named("audio:wav", decode={"audio": "frames"})


def test_text_and_lookups_follow_litdata() -> None:
    import litdata

    data, fmt = _lit_write(litdata.Text(text="héllo"))
    assert fmt == "text" and deserialize_leaf(data, fmt) == "héllo"
    assert serialize_leaf(Txt(text="héllo")) == (data, fmt)
    # LitData reads ``base:sub`` with the serializer named ``sub`` when there is one.
    assert serializer_named("image:jpeg").name == "jpeg"
    assert serializer_named("file:json").name == "json"
    assert serializer_named("graph:pickle").name == "pickle"
    assert serializer_named("image:png").name == "image"
    assert serializer_named("nifti:nii.gz").name == "nifti"


def test_columns_may_mix_file_extensions_and_litdata_types_are_not_pickled() -> None:
    assert same_column("image:png", "image:jpg") and same_column("video:mp4", "video:webm")
    assert same_column("pil", "jpeg") and same_column("int", "int")
    assert not same_column("image:png", "pil") and not same_column("mesh:glb", "mesh:ply")
    assert not same_column("no_header_numpy:1", "no_header_numpy:2") and not same_column("int", "float")
    import litdata

    with pytest.raises(TypeError, match="litdata.Jpeg"):
        serialize_leaf(litdata.Jpeg(bytes=b"\xff\xd8"))
    assert serialize_leaf(litdata.Image(bytes=b"raw"))[1] == "image:jpg"


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000,
        np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
        np.arange(12, dtype=np.int64).reshape(3, 4),  # narrowed to int32, as LitData does
        np.linspace(0, 1, 36).reshape(3, 4, 3),  # HWC floats in [0, 1]: scaled to uint8
        (np.arange(36) * 7).reshape(3, 4, 3).astype(np.int32),
    ],
    ids=lambda a: f"{a.dtype}{a.shape}",
)
def test_arrays_become_images_as_litdata_makes_them(array: np.ndarray) -> None:
    import litdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LitData warns when it downcasts
        pil_theirs = _lit_write(litdata.Pil(array=array))
        if array.ndim == 2 and array.dtype.kind in "if":  # modes I and F: PNG cannot hold them, in both
            for image in (litdata.Image(array=array), Img(array=array)):
                with pytest.raises(OSError, match="cannot write mode"):
                    serialize_leaf(image) if isinstance(image, Img) else _lit_write(image)
        else:
            theirs = _lit_write(litdata.Image(array=array))
            assert (bytes(serialize_leaf(Img(array=array))[0]), serialize_leaf(Img(array=array))[1]) == theirs
    data, fmt = serialize_leaf(litdata.Pil(array=array))
    assert (bytes(data), fmt) == pil_theirs and fmt == "pil"
    assert_same(deserialize_leaf(data, fmt), lit_deserialize(bytes(data), fmt))
