"""MosaicML MDS column encodings, decoded as MosaicML Streaming decodes them (same Python types), but with
every length a sample declares checked against the bytes it actually has.

Encodings: ``bytes``, ``str``, ``int`` (int64 -> int), ``int8..int64``, ``uint8..uint64``, ``float16..float64``
(NumPy scalars), ``str_int``, ``str_float``, ``str_decimal``, ``pil`` (raw pixels), ``jpeg``, ``png`` (PIL
images), ``list[pil]``, ``list[jpeg]``, ``list[png]``, ``jpeg_array``, ``ndarray[:dtype[:shape]]``, ``json`` and
``pkl`` (only with ``allow_pickle``: unpickling runs code).
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np

from lit_streaming.formats.base import CorruptShardError, FormatError

Decoder = Callable[[memoryview, str], Any]
_U32 = np.dtype("<u4")

_SCALARS = {
    name: np.dtype(name)
    for name in (
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "float16",
        "float32",
        "float64",
    )
}
# NDArray's one-byte codes for the value dtype and for the dtype of the stored shape.
_VALUE_DTYPES = {
    8: "uint8",
    9: "int8",
    16: "uint16",
    17: "int16",
    18: "float16",
    32: "uint32",
    33: "int32",
    34: "float32",
    64: "uint64",
    65: "int64",
    66: "float64",
}
_SHAPE_DTYPES = {0: "uint8", 1: "uint16", 2: "uint32", 3: "uint64"}
UNSAFE = frozenset({"pkl"})


def _need(data: memoryview, size: int, what: str) -> None:
    if len(data) != size:
        raise CorruptShardError(f"{what}: {len(data)} bytes where the encoding needs exactly {size}")


def _utf8(data: memoryview, what: str) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorruptShardError(f"{what}: not valid UTF-8 ({err})") from err


def _scalar(dtype: np.dtype) -> Decoder:
    def decode(data: memoryview, what: str) -> Any:
        _need(data, dtype.itemsize, what)
        return np.frombuffer(data, dtype)[0]

    return decode


def _int(data: memoryview, what: str) -> int:
    _need(data, 8, what)
    return int(np.frombuffer(data, np.int64)[0])


def _pil(data: memoryview, what: str) -> Any:
    from PIL import Image

    if len(data) < 12:
        raise CorruptShardError(f"{what}: pil value of {len(data)} bytes is shorter than its 12-byte header")
    width, height, mode_len = (int(x) for x in np.frombuffer(data, _U32, count=3))
    if 12 + mode_len > len(data):
        raise CorruptShardError(f"{what}: pil value cannot hold its {mode_len}-byte mode name")
    mode = _utf8(data[12 : 12 + mode_len], what)
    raw = bytes(data[12 + mode_len :])
    try:
        return Image.frombytes(mode, (width, height), raw)
    except ValueError as err:
        raise CorruptShardError(f"{what}: pil value of {width}x{height} {mode!r} is invalid ({err})") from err


def _image_file(data: memoryview, what: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(bytes(data)))
    except UnidentifiedImageError as err:
        raise CorruptShardError(f"{what}: not a readable image ({err})") from err
    return image


def _lengths_then_items(data: memoryview, start: int, count: int, what: str) -> list[memoryview]:
    """``count`` u32 sizes at ``start``, then the items back to back; each bounded by the value's bytes."""
    sizes_end = start + 4 * count
    if sizes_end > len(data):
        raise CorruptShardError(f"{what}: a list of {count} items does not fit in {len(data)} bytes")
    sizes = np.frombuffer(data, _U32, count=count, offset=start).astype(np.int64)
    if sizes_end + int(sizes.sum()) > len(data):
        raise CorruptShardError(f"{what}: list items declare more bytes than the value holds")
    items, pos = [], sizes_end
    for size in sizes.tolist():
        items.append(data[pos : pos + size])
        pos += size
    return items


def _image_list(item: Decoder) -> Decoder:
    def decode(data: memoryview, what: str) -> list[Any]:
        if len(data) < 8:
            raise CorruptShardError(f"{what}: image list of {len(data)} bytes lacks its header")
        count = int(np.frombuffer(data, _U32, count=1, offset=4)[0])  # the first u32 is reserved
        return [item(x, f"{what}[{i}]") for i, x in enumerate(_lengths_then_items(data, 8, count, what))]

    return decode


def _jpeg_array(data: memoryview, what: str) -> list[Any]:
    if len(data) < 4:
        raise CorruptShardError(f"{what}: jpeg_array of {len(data)} bytes lacks its header")
    count = int(np.frombuffer(data, _U32, count=1)[0])
    if count == 0:
        raise CorruptShardError(f"{what}: jpeg_array holds no images")
    return [_image_file(x, f"{what}[{i}]") for i, x in enumerate(_lengths_then_items(data, 4, count, what))]


def _ndarray(spec: str, where: str) -> Decoder:
    """``ndarray``, ``ndarray:DTYPE`` or ``ndarray:DTYPE:D0,D1,...``: what the header does not fix, each
    value stores (dtype code byte; ndim/shape-dtype byte then the shape)."""
    args = spec.split(":")[1:] if ":" in spec else []
    if len(args) > 2:
        raise FormatError(f"{where}: bad ndarray encoding {spec!r}")
    fixed_dtype = np.dtype(args[0]) if args and args[0] else None
    if fixed_dtype is not None and fixed_dtype.name not in _VALUE_DTYPES.values():
        raise FormatError(f"{where}: ndarray dtype {args[0]!r} is not one MDS stores")
    try:
        fixed_shape = tuple(int(d) for d in args[1].split(",")) if len(args) == 2 else None
    except ValueError:
        raise FormatError(f"{where}: bad ndarray shape in {spec!r}") from None

    def decode(data: memoryview, what: str) -> np.ndarray:
        pos = 0
        dtype = fixed_dtype
        if dtype is None:
            if len(data) < 1 or data[0] not in _VALUE_DTYPES:
                raise CorruptShardError(f"{what}: ndarray value has no valid dtype code")
            dtype, pos = np.dtype(_VALUE_DTYPES[data[0]]), 1
        shape = fixed_shape
        if shape is None:
            if len(data) < pos + 1:
                raise CorruptShardError(f"{what}: ndarray value has no shape header")
            ndim, code = data[pos] >> 2, data[pos] & 3
            shape_dtype = np.dtype(_SHAPE_DTYPES[code])
            pos += 1
            if pos + ndim * shape_dtype.itemsize > len(data):
                raise CorruptShardError(f"{what}: ndarray shape of {ndim} dims does not fit the value")
            shape = tuple(int(d) for d in np.frombuffer(data, shape_dtype, count=ndim, offset=pos))
            pos += ndim * shape_dtype.itemsize
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        _need(data[pos:], count * dtype.itemsize, f"{what} (ndarray {dtype.name}{list(shape)})")
        return np.frombuffer(data[pos:], dtype).reshape(shape)  # a view of the shard, as MDS returns

    return decode


def _json(data: memoryview, what: str) -> Any:
    try:
        return json.loads(_utf8(data, what))
    except json.JSONDecodeError as err:
        raise CorruptShardError(f"{what}: invalid JSON ({err})") from err


def _pickle(data: memoryview, what: str) -> Any:
    return pickle.loads(data)


def _text(convert: Callable[[str], Any]) -> Decoder:
    def decode(data: memoryview, what: str) -> Any:
        text = _utf8(data, what)
        try:
            return convert(text)
        except (ValueError, ArithmeticError) as err:
            raise CorruptShardError(f"{what}: {text[:40]!r} is not a valid number ({err})") from err

    return decode


_SIMPLE: dict[str, Decoder] = {
    "bytes": lambda data, what: bytes(data),
    "str": _utf8,
    "int": _int,
    "str_int": _text(int),
    "str_float": _text(float),
    "str_decimal": _text(Decimal),
    "pil": _pil,
    "jpeg": _image_file,
    "png": _image_file,
    "list[pil]": _image_list(_pil),
    "list[jpeg]": _image_list(_image_file),
    "list[png]": _image_list(_image_file),
    "jpeg_array": _jpeg_array,
    "jpegarray": _jpeg_array,
    "json": _json,
    "pkl": _pickle,
    **{name: _scalar(dtype) for name, dtype in _SCALARS.items()},
}
# Fixed sizes of the encodings whose values have no size prefix in a sample.
FIXED_SIZES = {"int": 8, **{name: dtype.itemsize for name, dtype in _SCALARS.items()}}


def decoder_for(encoding: Any, where: str) -> Decoder:
    """The decoder for an MDS column encoding, or an error naming the column and the shard."""
    if not isinstance(encoding, str):
        raise FormatError(f"{where}: column encoding {encoding!r} is not a string")
    if encoding == "ndarray" or encoding.startswith("ndarray:"):
        return _ndarray(encoding, where)
    base = encoding.split(":", 1)[0]
    if base == "jpeg" and encoding != "jpeg":
        return _image_file  # "jpeg:QUALITY" only changes how MDS encodes
    decoder = _SIMPLE.get(encoding)
    if decoder is None:
        raise FormatError(
            f"{where}: unknown MDS column encoding {encoding!r} (known: {sorted(_SIMPLE)} and ndarray[:dtype[:shape]])"
        )
    return decoder


def fixed_size(encoding: str) -> int | None:
    """Bytes a value of ``encoding`` always takes (None when each value stores its size)."""
    if encoding.startswith("ndarray:"):
        args = encoding.split(":")[1:]
        if len(args) == 2 and args[0]:
            shape = [int(d) for d in args[1].split(",")]
            return int(np.prod(shape)) * np.dtype(args[0]).itemsize
        return None
    return FIXED_SIZES.get(encoding)
