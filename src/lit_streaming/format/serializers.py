"""Leaf serializers, byte-compatible with LitData 0.2.76.

Every pytree leaf of a sample is stored as one payload plus a format name in ``data_format``.
The byte layouts match LitData exactly so that datasets written by either library read in the
other (see DESIGN.md section 4). Deserializers are on the read hot path, so they build arrays and
tensors directly on the given buffer (usually a memoryview of a chunk mapped copy-on-write, or
of a decompressed bytearray) instead of copying: the results are writable views that keep the
buffer alive. Writing to one never reaches the file, but it does change what later reads of the
same open chunk return, so call ``.copy()`` / ``.clone()`` before writing to them. Immutable
buffers (``bytes``, read-only views) are copied for tensors, which must not write into them. All
multi-byte fields assume a little-endian host, as LitData does.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import math
import os
import pickle
import struct
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lit_streaming.errors import LitStreamingError, LitStreamingTypeError, LitStreamingValueError

Buffer = bytes | bytearray | memoryview

# LitData's tables. Torch indices come in pairs of aliases (float32/float, int64/long, ...); LitData
# inverts the table with a dict comprehension, so the *last* index of each dtype is what it writes.
TORCH_DTYPES: tuple[torch.dtype, ...] = (
    torch.float32, torch.float, torch.float64, torch.double, torch.complex64, torch.cfloat,
    torch.complex128, torch.cdouble, torch.float16, torch.half, torch.bfloat16, torch.uint8,
    torch.int8, torch.int16, torch.short, torch.int32, torch.int, torch.int64, torch.long,
    torch.bool, torch.uint16,
)  # fmt: skip
_TORCH_INDEX: dict[torch.dtype, int] = {dtype: i for i, dtype in enumerate(TORCH_DTYPES)}

# Numpy index = position in this list. Object/bytes/str/void (14..17) have no fixed-size raw
# encoding, so we never write them (they go to pickle) and refuse to read them.
NUMPY_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t)
    for t in (
        np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64, np.complex64, np.complex128, bool, object, bytes, str, np.void,
    )
)  # fmt: skip
_NUMPY_INDEX: dict[np.dtype, int] = {dtype: i for i, dtype in enumerate(NUMPY_DTYPES[:14])}

_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_U32X2_LE = struct.Struct("<II")
_U32X2_BE = struct.Struct(">II")
_U32X3 = struct.Struct("<III")
_MAX_NDIM = 64  # numpy's own limit; anything larger in a header is corruption


class UnknownSerializerError(ValueError, LitStreamingError):
    """A ``data_format`` entry names a serializer this library does not implement."""


class PickleNotAllowedError(ValueError, LitStreamingError):
    """A ``pickle`` leaf was read without the caller opting in."""


def _pickle_refusal() -> PickleNotAllowedError:
    return PickleNotAllowedError(
        "This dataset stores a leaf with data_format 'pickle'. Unpickling runs arbitrary code from "
        "the dataset files, so it is refused by default. Pass allow_pickle=True only if you trust "
        "whoever wrote the data."
    )


class Serializer(ABC):
    """Turns one leaf into bytes and back. Stateless, so one shared instance serves every worker."""

    name: str

    @abstractmethod
    def can_serialize(self, obj: Any) -> bool:
        """Whether this serializer handles ``obj`` (the first match in ``SERIALIZER_ORDER`` wins)."""

    @abstractmethod
    def serialize(self, obj: Any) -> tuple[bytes | memoryview, str]:
        """Return the payload and the full format name to store in ``data_format``."""

    @abstractmethod
    def deserialize(self, data: Buffer, fmt: str) -> Any:
        """Rebuild the leaf from ``data``; ``fmt`` is the full stored format name."""


def _frombuffer_tensor(data: Buffer, dtype: torch.dtype) -> torch.Tensor:
    """Zero-copy tensor over ``data``. Chunk buffers are writable (copy-on-write mappings, decompressed
    bytearrays); an immutable buffer is copied first, as a tensor over it could write into ``bytes``
    (torch warns about that, and silencing the warning per call would rewrite the process-wide filters).
    """
    if isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly):
        data = bytearray(data)
    return torch.frombuffer(data, dtype=dtype)


@functools.cache
def _torchvision_image_op(name: str) -> Any:
    """torchvision's registered image op ``name`` (``decode_jpeg``, ``decode_image``), or None when torchvision
    was built without its image library. Its Python wrappers warn on every call since torchvision 0.29 (the
    decoders move to torchcodec); silencing that per call would rewrite the process-wide warning filters, so
    the decoders call the op the wrappers call."""
    import torchvision.io  # noqa: F401 - loads the ops into torch.ops.image

    try:
        return getattr(torch.ops.image, name)
    except (AttributeError, RuntimeError):
        return None


def _torchvision_decode(name: str, data: Buffer) -> torch.Tensor:
    """Decode image bytes to an RGB uint8 CHW tensor with torchvision's op ``name``; RuntimeError when the
    op is missing or cannot decode ``data`` (callers fall back to PIL)."""
    from torchvision.io import ImageReadMode

    op = _torchvision_image_op(name)
    if op is None:
        raise RuntimeError(f"torchvision has no {name} op")
    return op(_frombuffer_tensor(data, torch.uint8), ImageReadMode.RGB.value, False)


def _check_payload(kind: str, shape: tuple[int, ...], itemsize: int, got: int) -> None:
    expected = math.prod(shape) * itemsize
    if expected != got:
        raise LitStreamingValueError(
            f"{kind} payload is {got} bytes but its header says shape {shape} x {itemsize} bytes = "
            f"{expected}: the data is corrupt or was not written by this format"
        )


class StrSerializer(Serializer):
    """UTF-8 text. Unlike LitData we do not stat() each string to divert existing file paths."""

    name = "str"

    def can_serialize(self, obj: Any) -> bool:
        return isinstance(obj, str)

    def serialize(self, obj: str) -> tuple[bytes, str]:
        return obj.encode("utf-8"), self.name

    def deserialize(self, data: Buffer, fmt: str) -> str:
        return str(data, "utf-8")


class BoolSerializer(Serializer):
    """One byte, 0 or 1. Checked before ``int`` because ``bool`` subclasses ``int``."""

    name = "bool"

    def can_serialize(self, obj: Any) -> bool:
        return isinstance(obj, bool)

    def serialize(self, obj: bool) -> tuple[bytes, str]:
        return (b"\x01" if obj else b"\x00"), self.name

    def deserialize(self, data: Buffer, fmt: str) -> bool:
        if len(data) != 1:
            raise LitStreamingValueError(f"bool payload must be 1 byte, got {len(data)}")
        return data[0] != 0


class IntSerializer(Serializer):
    """Signed 64-bit little-endian."""

    name = "int"

    def can_serialize(self, obj: Any) -> bool:
        return isinstance(obj, int)

    def serialize(self, obj: int) -> tuple[bytes, str]:
        try:
            return _I64.pack(obj), self.name
        except struct.error as exc:
            raise LitStreamingValueError(
                f"int leaf {obj} does not fit in int64; store it as a str instead"
            ) from exc

    def deserialize(self, data: Buffer, fmt: str) -> int:
        if len(data) != 8:
            raise LitStreamingValueError(f"int payload must be 8 bytes, got {len(data)}")
        return _I64.unpack(data)[0]


class FloatSerializer(Serializer):
    """IEEE float64 little-endian (``np.float64`` subclasses ``float`` and lands here too)."""

    name = "float"

    def can_serialize(self, obj: Any) -> bool:
        return isinstance(obj, float)

    def serialize(self, obj: float) -> tuple[bytes, str]:
        return _F64.pack(obj), self.name

    def deserialize(self, data: Buffer, fmt: str) -> float:
        if len(data) != 8:
            raise LitStreamingValueError(f"float payload must be 8 bytes, got {len(data)}")
        return _F64.unpack(data)[0]


def _pil_raw_size(mode: str, width: int, height: int) -> int:
    """Bytes of ``Image.tobytes()`` for a mode, computed without allocating the image."""
    from PIL import ImageMode

    try:
        desc = ImageMode.getmode(mode)
    except KeyError:
        raise LitStreamingValueError(f"pil payload has unknown image mode {mode!r}") from None
    if mode == "1":
        return (width + 7) // 8 * height
    return width * height * len(desc.bands) * int(desc.typestr[2:])


def _is_jpeg_file(obj: Any) -> bool:
    # PIL is only imported by users who made images, so an absent module means "not an image".
    jpeg_plugin = sys.modules.get("PIL.JpegImagePlugin")
    return jpeg_plugin is not None and isinstance(obj, jpeg_plugin.JpegImageFile)


class PilSerializer(Serializer):
    """Raw pixels of a non-JPEG PIL image: u32 width, u32 height, u32 len(mode), mode, pixels.

    As in LitData, only pixels survive: a ``P`` image loses its palette and ``info`` is dropped.
    """

    name = "pil"

    def can_serialize(self, obj: Any) -> bool:
        if _wrapper_kind(obj) == "Pil":
            return True
        pil_image = sys.modules.get("PIL.Image")
        return pil_image is not None and isinstance(obj, pil_image.Image) and not _is_jpeg_file(obj)

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        if _wrapper_kind(obj) == "Pil":
            obj = _pil_of_wrapper(obj)
        mode = obj.mode.encode("ascii")
        width, height = obj.size
        return _U32X3.pack(width, height, len(mode)) + mode + obj.tobytes(), self.name

    def deserialize(self, data: Buffer, fmt: str) -> Any:
        from PIL import Image

        if len(data) < 12:
            raise LitStreamingValueError(
                f"pil payload of {len(data)} bytes is shorter than its 12-byte header"
            )
        width, height, mode_len = _U32X3.unpack_from(data)
        if 12 + mode_len > len(data):
            raise LitStreamingValueError(
                f"pil payload of {len(data)} bytes cannot hold a {mode_len}-byte mode name"
            )
        mode = bytes(data[12 : 12 + mode_len]).decode("ascii", errors="replace")
        raw = memoryview(data)[12 + mode_len :]
        expected = _pil_raw_size(mode, width, height)
        if expected != len(raw):
            raise LitStreamingValueError(
                f"pil payload has {len(raw)} pixel bytes; a {width}x{height} {mode!r} image needs {expected}"
            )
        return Image.frombytes(mode, (width, height), raw)


def _has_exif_app1(data: Buffer) -> bool:
    """Walk the JPEG markers before the scan data looking for an APP1 'Exif' segment.

    LitData rotates such images with PIL's ``exif_transpose``; we must take the same path to
    return the same pixels.
    """
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: no more metadata segments
            return False
        if marker in (0xD8, 0xD9) or 0xD0 <= marker <= 0xD7:  # segments without a length
            pos += 2
            continue
        if marker == 0xE1 and bytes(data[pos + 4 : pos + 8]) == b"Exif":
            return True
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return False


def _pil_to_chw(image: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


class JpegSerializer(Serializer):
    """A JPEG opened from a file keeps the file's own bytes (no re-encode, no quality loss).

    Decodes like LitData: a uint8 RGB tensor of shape (3, H, W), grayscale expanded to 3
    channels; EXIF-tagged files go through PIL with ``exif_transpose``, others through
    ``torchvision.io.decode_jpeg`` (the fast path), with PIL as the fallback.
    """

    name = "jpeg"

    def can_serialize(self, obj: Any) -> bool:
        return _is_jpeg_file(obj)

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        filename = getattr(obj, "filename", None)
        if filename is None:
            raise LitStreamingValueError(
                "The JPEG image has no filename attribute; open it inside __getitem__."
            )
        fp = getattr(obj, "fp", None)
        if filename and fp is not None and not fp.closed and getattr(fp, "name", None) == filename:
            # PIL still holds the file open (it decodes lazily): read it there instead of opening it again
            position = fp.tell()
            fp.seek(0)
            data = fp.read()
            fp.seek(position)
            return data, self.name
        if filename and os.path.isfile(filename):
            with open(filename, "rb") as f:
                return f.read(), self.name
        # Opened from memory: LitData re-encodes with PIL's default settings, and so do we.
        buf = io.BytesIO()
        obj.save(buf, format="JPEG")
        return buf.getvalue(), self.name

    def deserialize(self, data: Buffer, fmt: str) -> torch.Tensor:
        from PIL import Image

        if _has_exif_app1(data):
            from PIL import ImageOps

            image = Image.open(io.BytesIO(data))
            image.load()
            return _pil_to_chw(ImageOps.exif_transpose(image))
        try:
            return _torchvision_decode("decode_jpeg", data)
        except RuntimeError:
            return _pil_to_chw(Image.open(io.BytesIO(data)))


class BytesSerializer(Serializer):
    """Raw ``bytes`` (exactly ``bytes``: bytearray and memoryview fall through to pickle, as in LitData)."""

    name = "bytes"

    def can_serialize(self, obj: Any) -> bool:
        return isinstance(obj, bytes)

    def serialize(self, obj: bytes) -> tuple[bytes, str]:
        return obj, self.name

    def deserialize(self, data: Buffer, fmt: str) -> bytes:
        return bytes(data)  # a copy, so user code never holds (and pins) the chunk's mmap


def _dtype_index(fmt: str, table_len: int) -> int:
    """The dtype index from names like ``no_header_numpy:9``."""
    _, _, suffix = fmt.partition(":")
    if not suffix.isdigit() or int(suffix) >= table_len:
        raise UnknownSerializerError(f"unknown serializer format {fmt!r}: bad dtype index")
    return int(suffix)


def _numpy_native(obj: np.ndarray) -> np.ndarray:
    """C-ordered little-endian data, the only layout LitData's index tables describe."""
    if obj.dtype.byteorder == ">":
        obj = obj.astype(obj.dtype.newbyteorder("<"))
    return obj


def _numpy_supported(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) and obj.dtype.newbyteorder("=") in _NUMPY_INDEX


class NoHeaderNumpySerializer(Serializer):
    """1-D arrays: raw data, the dtype index lives in the format name (``no_header_numpy:{i}``)."""

    name = "no_header_numpy"

    def can_serialize(self, obj: Any) -> bool:
        return _numpy_supported(obj) and obj.ndim == 1

    def serialize(self, obj: np.ndarray) -> tuple[bytes, str]:
        obj = _numpy_native(obj)
        return obj.tobytes(order="C"), f"{self.name}:{_NUMPY_INDEX[obj.dtype.newbyteorder('=')]}"

    def deserialize(self, data: Buffer, fmt: str) -> np.ndarray:
        dtype = _numpy_dtype(_dtype_index(fmt, len(NUMPY_DTYPES)))
        if len(data) % dtype.itemsize:
            raise LitStreamingValueError(
                f"{fmt} payload of {len(data)} bytes is not a multiple of {dtype.itemsize}"
            )
        return np.frombuffer(data, dtype=dtype)


def _numpy_dtype(index: int) -> np.dtype:
    if index >= len(_NUMPY_INDEX):
        raise LitStreamingValueError(f"numpy dtype index {index} ({NUMPY_DTYPES[index]}) has no raw encoding")
    return NUMPY_DTYPES[index]


def _shape_header(byteorder: str, index: int, shape: tuple[int, ...]) -> bytes:
    if any(dim >= 2**32 for dim in shape):
        raise LitStreamingValueError(f"shape {shape} has a dimension too large for the u32 header")
    return struct.pack(f"{byteorder}{2 + len(shape)}I", index, len(shape), *shape)


class NumpySerializer(Serializer):
    """Arrays of other ranks: u32 dtype index, u32 ndim, u32 dims (little-endian), raw C-order data.

    LitData pickles 0-d arrays; we store them here (ndim 0) because LitData reads that fine and
    it keeps scalars readable without ``allow_pickle``.
    """

    name = "numpy"

    def can_serialize(self, obj: Any) -> bool:
        return _numpy_supported(obj) and obj.ndim != 1

    def serialize(self, obj: np.ndarray) -> tuple[bytes, str]:
        obj = _numpy_native(obj)
        header = _shape_header("<", _NUMPY_INDEX[obj.dtype.newbyteorder("=")], obj.shape)
        return header + obj.tobytes(order="C"), self.name

    def deserialize(self, data: Buffer, fmt: str) -> np.ndarray:
        if len(data) < 8:
            raise LitStreamingValueError(
                f"numpy payload of {len(data)} bytes is shorter than its 8-byte header"
            )
        index, ndim = _U32X2_LE.unpack_from(data)
        if index >= len(NUMPY_DTYPES) or ndim > _MAX_NDIM or 8 + 4 * ndim > len(data):
            raise LitStreamingValueError(
                f"numpy payload header (dtype index {index}, ndim {ndim}) is corrupt"
            )
        dtype = _numpy_dtype(index)
        shape = struct.unpack_from(f"<{ndim}I", data, 8)
        body = memoryview(data)[8 + 4 * ndim :]
        _check_payload("numpy", shape, dtype.itemsize, len(body))
        return np.frombuffer(body, dtype=dtype).reshape(shape)


def _tensor_supported(obj: Any) -> bool:
    return isinstance(obj, torch.Tensor) and obj.layout is torch.strided and obj.dtype in _TORCH_INDEX


def _tensor_bytes(obj: torch.Tensor) -> np.ndarray:
    """C-order bytes of any supported tensor, bfloat16 included (LitData's ``.numpy()`` path fails on it)."""
    obj = obj.detach().cpu().resolve_conj().resolve_neg().contiguous()
    return obj.reshape(-1).view(torch.uint8).numpy()


class NoHeaderTensorSerializer(Serializer):
    """1-D tensors: raw data, the dtype index lives in the format name (``no_header_tensor:{i}``)."""

    name = "no_header_tensor"

    def can_serialize(self, obj: Any) -> bool:
        return _tensor_supported(obj) and obj.dim() == 1

    def serialize(self, obj: torch.Tensor) -> tuple[bytes, str]:
        return _tensor_bytes(obj).tobytes(), f"{self.name}:{_TORCH_INDEX[obj.dtype]}"

    def deserialize(self, data: Buffer, fmt: str) -> torch.Tensor:
        dtype = TORCH_DTYPES[_dtype_index(fmt, len(TORCH_DTYPES))]
        if not len(data):
            return torch.empty((0,), dtype=dtype)
        if len(data) % dtype.itemsize:
            raise LitStreamingValueError(
                f"{fmt} payload of {len(data)} bytes is not a multiple of {dtype.itemsize}"
            )
        return _frombuffer_tensor(data, dtype)


def _read_tensor_header(data: Buffer) -> tuple[torch.dtype, tuple[int, ...], int] | None:
    """Parse the header in one byte order; ``None`` unless every field is consistent with the payload."""
    for byteorder, head in ((">", _U32X2_BE), ("<", _U32X2_LE)):
        index, ndim = head.unpack_from(data)
        start = 8 + 4 * ndim
        if index >= len(TORCH_DTYPES) or ndim > _MAX_NDIM or start > len(data):
            continue
        dtype = TORCH_DTYPES[index]
        shape = struct.unpack_from(f"{byteorder}{ndim}I", data, 8)
        if math.prod(shape) * dtype.itemsize == len(data) - start:
            return dtype, shape, start
    return None


class TensorSerializer(Serializer):
    """0-d and >=2-d tensors: u32 dtype index, u32 ndim, u32 dims, raw C-order data.

    LitData 0.2.76 writes the header *big-endian* (the data stays little-endian); older LitData
    wrote it little-endian. We write big-endian and read both: the byte order whose fields agree
    with the payload length wins (only an all-zero header, i.e. a 0-d float32, reads the same
    either way).
    """

    name = "tensor"

    def can_serialize(self, obj: Any) -> bool:
        return _tensor_supported(obj) and obj.dim() != 1

    def serialize(self, obj: torch.Tensor) -> tuple[bytes, str]:
        header = _shape_header(">", _TORCH_INDEX[obj.dtype], tuple(obj.shape))
        return b"".join((header, _tensor_bytes(obj))), self.name

    def deserialize(self, data: Buffer, fmt: str) -> torch.Tensor:
        parsed = _read_tensor_header(data) if len(data) >= 8 else None
        if parsed is None:
            raise LitStreamingValueError(
                f"tensor payload of {len(data)} bytes has a header that matches neither byte order "
                "(dtype index, ndim and dims disagree with the payload length): the data is corrupt"
            )
        dtype, shape, start = parsed
        if start == len(data):
            return torch.empty(shape, dtype=dtype)
        return _frombuffer_tensor(memoryview(data)[start:], dtype).reshape(shape)


class JsonLeaf:
    """Marks a list of JSON values as *one* leaf, so the sample's structure (and ``data_format``) does not
    depend on the list's length. LitData 0.2.76 stores such lists in dict samples this way (``json``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"JsonLeaf({self.value!r})"


def is_json_value(value: Any) -> bool:
    """JSON scalars, and lists / str-keyed dicts of them (bytes are not JSON: such lists stay pytree leaves)."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(is_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_value(v) for k, v in value.items())
    return False


# LitData's compact JSON encoding: a tag byte, then a typed body. A payload whose first byte is above 0x20
# ('[' or '{') is plain JSON text, as older LitData wrote it.
_J_TEXT, _J_STRS, _J_I64S, _J_F64S, _J_BOOLS, _J_DICT, _J_RECS = range(7)
_J_STR, _J_I64, _J_F64, _J_BOOL, _J_NONE = range(7, 12)
_R_NONE, _R_STR, _R_I64, _R_F64, _R_BOOL = range(0x10, 0x15)
_U32 = struct.Struct("<I")
_TAG_U32 = struct.Struct("<BI")
_I64_RANGE = range(-(2**63), 2**63)
_MAX_JSON_DEPTH = 200


def _is_i64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in _I64_RANGE


def _utf8_field(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def _json_text(value: Any) -> bytes:
    payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _TAG_U32.pack(_J_TEXT, len(payload)) + payload


def _encode_json_list(value: list[Any]) -> bytes:
    if not value:
        return _TAG_U32.pack(_J_STRS, 0)
    head = _TAG_U32.pack
    if all(isinstance(v, str) for v in value):
        return head(_J_STRS, len(value)) + b"".join(_utf8_field(v) for v in value)
    if all(isinstance(v, bool) for v in value):
        return head(_J_BOOLS, len(value)) + bytes(1 if v else 0 for v in value)
    if all(_is_i64(v) for v in value):
        return head(_J_I64S, len(value)) + np.asarray(value, dtype="<i8").tobytes()
    if all(isinstance(v, float) for v in value):
        return head(_J_F64S, len(value)) + np.asarray(value, dtype="<f8").tobytes()
    if all(isinstance(v, dict) for v in value):
        records = _encode_json_records(value)
        if records is not None:
            return records
    return _json_text(value)


def _record_field(value: Any) -> bytes | None:
    if value is None:
        return bytes([_R_NONE])
    if isinstance(value, bool):
        return bytes([_R_BOOL, 1 if value else 0])
    if isinstance(value, str):
        return bytes([_R_STR]) + _utf8_field(value)
    if _is_i64(value):
        return bytes([_R_I64]) + _I64.pack(value)
    if isinstance(value, float):
        return bytes([_R_F64]) + _F64.pack(value)
    return None


def _encode_json_records(rows: list[dict[str, Any]]) -> bytes | None:
    """Rows sharing one key set of scalar fields: the keys once, then the typed fields row by row."""
    keys = list(rows[0])
    if not keys or any(not isinstance(k, str) for k in keys):
        return None
    parts = [_TAG_U32.pack(_J_RECS, len(rows)), _U32.pack(len(keys)), *(_utf8_field(k) for k in keys)]
    for row in rows:
        if row.keys() != set(keys):
            return None
        for key in keys:
            field = _record_field(row[key])
            if field is None:
                return None
            parts.append(field)
    return b"".join(parts)


def encode_json(value: Any) -> bytes:
    """LitData 0.2.76's ``json`` leaf bytes for ``value`` (typed binary where it can, JSON text otherwise)."""
    if value is None:
        return bytes([_J_NONE])
    if isinstance(value, bool):
        return bytes([_J_BOOL, 1 if value else 0])
    if isinstance(value, str):
        return bytes([_J_STR]) + _utf8_field(value)
    if _is_i64(value):
        return bytes([_J_I64]) + _I64.pack(value)
    if isinstance(value, float):
        return bytes([_J_F64]) + _F64.pack(value)
    if isinstance(value, dict):
        if any(not isinstance(k, str) for k in value):
            return _json_text(value)
        parts = [_TAG_U32.pack(_J_DICT, len(value))]
        for key, item in value.items():
            parts.append(_utf8_field(key))
            parts.append(encode_json(item))
        return b"".join(parts)
    if isinstance(value, list):
        return _encode_json_list(value)
    return _json_text(value)


class _JsonReader:
    """Decodes the tagged encoding with every length checked against the payload."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.raw):
            raise LitStreamingValueError(f"json payload of {len(self.raw)} bytes is truncated (needs {end})")
        out = self.raw[self.pos : end]
        self.pos = end
        return out

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def text(self) -> str:
        return self.take(self.u32()).decode("utf-8")

    def count(self, item_bytes: int) -> int:
        n = self.u32()
        if n * item_bytes > len(self.raw) - self.pos:
            raise LitStreamingValueError(
                f"json payload claims {n} items but has {len(self.raw) - self.pos} bytes left"
            )
        return n

    def value(self, depth: int = 0) -> Any:
        if depth > _MAX_JSON_DEPTH:
            raise LitStreamingValueError(f"json payload nests deeper than {_MAX_JSON_DEPTH} levels")
        tag = self.take(1)[0]
        if tag == _J_TEXT:
            return json.loads(self.take(self.u32()))
        if tag == _J_NONE:
            return None
        if tag == _J_BOOL:
            return self.take(1)[0] != 0
        if tag == _J_STR:
            return self.text()
        if tag == _J_I64:
            return _I64.unpack(self.take(8))[0]
        if tag == _J_F64:
            return _F64.unpack(self.take(8))[0]
        if tag == _J_STRS:
            return [self.text() for _ in range(self.count(4))]
        if tag in (_J_I64S, _J_F64S):
            n = self.count(8)
            return np.frombuffer(self.take(8 * n), dtype="<i8" if tag == _J_I64S else "<f8").tolist()
        if tag == _J_BOOLS:
            return [b != 0 for b in self.take(self.count(1))]
        if tag == _J_DICT:
            n = self.count(5)
            return {self.text(): self.value(depth + 1) for _ in range(n)}
        if tag == _J_RECS:
            return self.records()
        raise LitStreamingValueError(f"json payload has unknown tag {tag} at byte {self.pos - 1}")

    def records(self) -> list[dict[str, Any]]:
        n = self.u32()
        keys = [self.text() for _ in range(self.count(4))]
        # Every field takes at least its tag byte, and LitData never writes records without keys.
        if n and (not keys or n * len(keys) > len(self.raw) - self.pos):
            raise LitStreamingValueError(
                f"json payload claims {n} records of {len(keys)} fields in too few bytes"
            )
        return [{key: self.record_field() for key in keys} for _ in range(n)]

    def record_field(self) -> Any:
        kind = self.take(1)[0]
        if kind == _R_NONE:
            return None
        if kind == _R_STR:
            return self.text()
        if kind == _R_I64:
            return _I64.unpack(self.take(8))[0]
        if kind == _R_F64:
            return _F64.unpack(self.take(8))[0]
        if kind == _R_BOOL:
            return self.take(1)[0] != 0
        raise LitStreamingValueError(
            f"json payload has unknown record field tag {kind} at byte {self.pos - 1}"
        )


def decode_json(data: Buffer) -> Any:
    """The value of a ``json`` leaf, in LitData's tagged encoding or as plain JSON text."""
    raw = bytes(data)
    if not raw or raw[0] > 0x20:
        return json.loads(raw)
    reader = _JsonReader(raw)
    value = reader.value()
    if reader.pos != len(raw):
        raise LitStreamingValueError(f"json payload has {len(raw) - reader.pos} bytes after its value")
    return value


class JsonSerializer(Serializer):
    """Lists (and dicts) of JSON values as one leaf; only ``JsonLeaf``-wrapped values are chosen for it."""

    name = "json"

    def can_serialize(self, obj: Any) -> bool:
        return isinstance(obj, JsonLeaf)

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        return encode_json(obj.value if isinstance(obj, JsonLeaf) else obj), self.name

    def deserialize(self, data: Buffer, fmt: str) -> Any:
        return decode_json(data)


class NumpyScalarSerializer(Serializer):
    """numpy scalars (``np.float32(x)``, ``labels[i]``) in the ``numpy`` layout with ndim 0, named
    ``numpy:scalar``: LitData's reader keys serializers by the part before ``:`` and reads it as a 0-d array,
    ours returns the scalar itself. LitData pickles these; we do not, so reading them needs no opt-in."""

    name = "numpy:scalar"

    def can_serialize(self, obj: Any) -> bool:
        return isinstance(obj, np.generic) and obj.dtype.newbyteorder("=") in _NUMPY_INDEX

    def serialize(self, obj: np.generic) -> tuple[bytes, str]:
        array = _numpy_native(np.asarray(obj))
        return _shape_header(
            "<", _NUMPY_INDEX[array.dtype.newbyteorder("=")], ()
        ) + array.tobytes(), self.name

    def deserialize(self, data: Buffer, fmt: str) -> np.generic:
        array = _SERIALIZERS["numpy"].deserialize(data, "numpy")
        if array.ndim != 0:
            raise LitStreamingValueError(
                f"numpy:scalar payload holds an array of shape {array.shape}, not a scalar"
            )
        return array[()]


def _decode_image_rgb(data: Buffer) -> torch.Tensor:
    """Image file bytes -> uint8 RGB tensor (3, H, W), as LitData decodes ``image:*`` and ``jpeg`` leaves: PIL
    with EXIF orientation applied when the JPEG has an Exif segment, torchvision otherwise, PIL as the
    fallback for what torchvision cannot decode (BMP, CMYK JPEG, ...)."""
    from PIL import Image

    if _has_exif_app1(data):
        from PIL import ImageOps

        image = Image.open(io.BytesIO(data))
        image.load()
        return _pil_to_chw(ImageOps.exif_transpose(image))
    try:
        return _torchvision_decode("decode_image", data)
    except RuntimeError:
        return _pil_to_chw(Image.open(io.BytesIO(bytes(data))))


class ImageSerializer(Serializer):
    """``image:<ext>`` leaves (LitData's ``Image`` wrapper): the encoded file bytes, decoded on read to a
    uint8 RGB tensor (3, H, W) like LitData. Written from an ``Image``-like wrapper (see ``_image_payload``)."""

    name = "image"

    def can_serialize(self, obj: Any) -> bool:
        return _wrapper_kind(obj) == "Image"

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        data, ext = _image_payload(obj)
        return data, f"image:{ext}"

    def deserialize(self, data: Buffer, fmt: str) -> torch.Tensor:
        return _decode_image_rgb(data)


class JpegArraySerializer(Serializer):
    """``jpeg_array``: u32 count, u32 sizes, then the JPEG files back to back; read as a list of tensors."""

    name = "jpeg_array"

    def can_serialize(self, obj: Any) -> bool:
        return False  # LitData writes it for lists of JPEG files; we keep those as one ``jpeg`` leaf each

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        raise LitStreamingTypeError(
            "jpeg_array leaves are read, not written: store each JPEG as its own leaf"
        )

    def deserialize(self, data: Buffer, fmt: str) -> list[torch.Tensor]:
        view = memoryview(data)
        if len(view) < 4:
            raise LitStreamingValueError(f"jpeg_array payload of {len(view)} bytes is shorter than its count")
        (n,) = _U32.unpack_from(view)
        start = 4 + 4 * n
        if n == 0 or start > len(view):
            raise LitStreamingValueError(f"jpeg_array payload of {len(view)} bytes cannot hold {n} images")
        sizes = np.frombuffer(view, dtype="<u4", count=n, offset=4).astype(np.int64)
        if start + int(sizes.sum()) != len(view):
            raise LitStreamingValueError(
                f"jpeg_array image sizes add up to {start + int(sizes.sum())} bytes, not {len(view)}"
            )
        bounds = np.concatenate(([start], start + np.cumsum(sizes))).tolist()
        return [_decode_image_rgb(view[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def _require(module: str, leaf: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = {"PIL": "pillow"}.get(module.split(".")[0], module.split(".")[0])
        raise ModuleNotFoundError(
            f"reading {leaf!r} leaves needs `{package}`: pip install {package}"
        ) from err


class TiffSerializer(Serializer):
    """``tifffile`` (LitData's name for a ``.tif`` path) and ``tiff`` (its ``Tiff`` wrapper) leaves: the TIFF
    file bytes, decoded on read with ``tifffile`` to a numpy array as LitData does. We write ``tifffile``:
    LitData 0.2.76 has no reader registered under the ``tiff`` name it writes itself."""

    name = "tifffile"

    def can_serialize(self, obj: Any) -> bool:
        return _wrapper_kind(obj) == "Tiff"

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        array = getattr(obj, "array", None)
        if array is None and getattr(obj, "image", None) is not None:
            array = np.asarray(obj.image)
        if array is None:
            return _wrapper_bytes(obj)[0], self.name
        buffer = io.BytesIO()
        _require("tifffile", "Tiff(array=...)").imwrite(buffer, np.asarray(array))
        return buffer.getvalue(), self.name

    def deserialize(self, data: Buffer, fmt: str) -> np.ndarray:
        tifffile = _require("tifffile", fmt)
        return tifffile.imread(io.BytesIO(bytes(data)))


class TextSerializer(Serializer):
    """``text`` leaves (LitData's ``Text`` wrapper): UTF-8, read as ``str``."""

    name = "text"

    def can_serialize(self, obj: Any) -> bool:
        return _wrapper_kind(obj) == "Text"

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        text = getattr(obj, "text", None)
        return (text.encode("utf-8") if text is not None else _wrapper_bytes(obj)[0]), self.name

    def deserialize(self, data: Buffer, fmt: str) -> str:
        return str(data, "utf-8")


_MEDIA_MODES = ("bytes", "decode")


class MediaSerializer(Serializer):
    """Encoded media files stored as they are (``video:<ext>``, ``audio:<ext>``, ``file:<ext>``, ``pdf``,
    ``mesh:<ext>``, ``nifti:<ext>``). Read as ``bytes`` by default, so a dataset opens without the optional
    decoders; ``decode`` mode hands the bytes to the library LitData uses for that kind."""

    def __init__(self, name: str, mode: str = "bytes") -> None:
        if mode not in _MEDIA_MODES:
            raise LitStreamingValueError(
                f"decode mode for {name!r} leaves must be one of {_MEDIA_MODES}, got {mode!r}"
            )
        self.name = name
        self.mode = mode

    def can_serialize(self, obj: Any) -> bool:
        return _wrapper_kind(obj) == _MEDIA_WRAPPERS.get(self.name)

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        data, ext = _wrapper_bytes(obj)
        if self.name == "pdf":
            return data, "pdf"
        return data, f"{self.name}:{ext}" if ext else self.name

    def deserialize(self, data: Buffer, fmt: str) -> Any:
        if self.mode == "bytes" or self.name == "file":
            return bytes(data)
        return _MEDIA_DECODERS[self.name](bytes(data), fmt)


def _decode_video(data: bytes, fmt: str) -> Any:
    """torchvision's ``read_video`` where this torchvision still has it, else torchcodec's ``VideoDecoder``."""
    import tempfile

    import torchvision.io

    read_video = getattr(torchvision.io, "read_video", None)
    if read_video is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "clip." + (fmt.partition(":")[2] or "mp4"))
            with open(path, "wb") as f:
                f.write(data)
            return read_video(path, pts_unit="sec")
    decoders = _require("torchcodec.decoders", fmt)
    return decoders.VideoDecoder(data)


def _decode_audio(data: bytes, fmt: str) -> Any:
    return _require("torchcodec.decoders", fmt).AudioDecoder(data)


def _decode_pdf(data: bytes, fmt: str) -> Any:
    return _require("pdfplumber", fmt).open(io.BytesIO(data))


def _decode_mesh(data: bytes, fmt: str) -> Any:
    return _require("trimesh", fmt).load(io.BytesIO(data), file_type=fmt.partition(":")[2] or "glb")


def _decode_nifti(data: bytes, fmt: str) -> Any:
    import gzip

    nib = _require("nibabel", fmt)
    return nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


_MEDIA_DECODERS = {
    "video": _decode_video,
    "audio": _decode_audio,
    "pdf": _decode_pdf,
    "mesh": _decode_mesh,
    "nifti": _decode_nifti,
}
_MEDIA_WRAPPERS = {
    "video": "Video",
    "audio": "Audio",
    "file": "File",
    "pdf": "Pdf",
    "mesh": "Mesh",
    "nifti": "Nifti",
}


@dataclass
class Media:
    """A media file to store as it is: ``path=`` (read when the sample is written) or ``bytes=``.

    The subclasses mirror LitData's wrapper types of the same names (``litdata.Image`` and friends are
    accepted too), so a LitData ``optimize`` function works unchanged and writes the same leaves."""

    path: str | None = None
    bytes: bytes | None = None


@dataclass
class Image(Media):
    """An image leaf (``image:<ext>``), read back as a uint8 RGB tensor (3, H, W). Pass-through for
    ``path``/``bytes``; ``array=`` (HWC) or ``image=`` (PIL), or any of ``format``/``quality``/``mode``,
    encode with Pillow (``format`` defaults to PNG, ``quality`` applies to JPEG and WebP)."""

    array: Any = None
    image: Any = None
    mode: str | None = None
    format: str | None = None
    quality: int | None = None


@dataclass
class Video(Media):
    """A video file leaf (``video:<ext>``): bytes on read unless the loader is asked to decode."""


@dataclass
class Audio(Media):
    """An audio file leaf (``audio:<ext>``): bytes on read unless the loader is asked to decode."""


@dataclass
class File(Media):
    """Any file stored as it is (``file:<ext>``), read back as bytes."""


@dataclass
class Text(Media):
    """UTF-8 text from ``text=``, a file or bytes (``text``), read back as ``str``; unlike a plain ``str`` leaf
    it says that a string which happens to be a path is to be read from that path."""

    text: str | None = None


@dataclass
class Tiff(Media):
    """A TIFF image (``tifffile``), read back as a numpy array with ``tifffile``; ``array=`` (or a PIL
    ``image=``) is encoded with ``tifffile``."""

    array: Any = None
    image: Any = None


_WRAPPER_NAMES = frozenset({"Image", "Video", "Audio", "File", "Text", "Tiff", "Pdf", "Mesh", "Nifti", "Pil"})


def _pil_of_wrapper(obj: Any) -> Any:
    """The PIL image of LitData's ``Pil`` wrapper (``image=``, ``array=``, or a file), in its ``mode``."""
    from PIL import Image as PILImage

    if obj.image is not None:
        image = obj.image
    elif obj.array is not None:
        image = _pil_from_array(obj.array)
    else:
        image = PILImage.open(io.BytesIO(_wrapper_bytes(obj)[0]))
    return image.convert(obj.mode) if obj.mode and image.mode != obj.mode else image


def _wrapper_kind(obj: Any) -> str | None:
    """The wrapper type name of one of our ``Media`` types or LitData's (``litdata.types``), else ``None``."""
    cls = type(obj)
    if cls.__name__ in _WRAPPER_NAMES and (isinstance(obj, Media) or cls.__module__ == "litdata.types"):
        return cls.__name__
    return None


def _extension(path: str | None) -> str:
    return os.path.splitext(str(path).split("?", 1)[0])[1].lstrip(".").lower() if path else ""


def _wrapper_bytes(obj: Any) -> tuple[bytes, str]:
    """(file bytes, extension) of a wrapper given ``bytes=`` or ``path=``."""
    path, data = getattr(obj, "path", None), getattr(obj, "bytes", None)
    if data is not None:
        return bytes(data), _extension(path)
    if path:
        with open(path, "rb") as f:
            return f.read(), _extension(path)
    raise LitStreamingTypeError(f"{type(obj).__name__} leaf needs path= or bytes=")


def _image_payload(obj: Any) -> tuple[bytes, str]:
    if getattr(obj, "max_quality", None) is not None:
        raise LitStreamingValueError(
            "Image(max_quality=...) is not supported by this writer; pass quality= instead"
        )
    fmt, quality, mode = (
        getattr(obj, "format", None),
        getattr(obj, "quality", None),
        getattr(obj, "mode", None),
    )
    image, array = getattr(obj, "image", None), getattr(obj, "array", None)
    if image is None and array is None:
        data, ext = _wrapper_bytes(obj)
        if fmt is None and quality is None and not mode:
            return data, ext or "jpg"
        from PIL import Image as PILImage

        image, fmt = PILImage.open(io.BytesIO(data)), fmt or ext or "PNG"
    elif image is None:
        image = _pil_from_array(array)
    return _encode_pil(image, fmt or getattr(image, "format", None) or "PNG", quality, mode)


# Array dtypes Pillow turns into images as they are (2-D); others are narrowed within their kind, as LitData.
_PIL_ARRAY_DTYPES = frozenset(np.dtype(t) for t in ("b1", "u1", "u2", "i2", "u4", "i4", "f4", "f8"))


def _pil_from_array(array: Any) -> Any:
    """``Image.fromarray`` after LitData's dtype rules: HWC arrays become uint8 (floats in [0, 1] scaled by
    255), 2-D arrays keep a Pillow-supported dtype or the nearest narrower one of the same kind."""
    from PIL import Image as PILImage

    pixels = np.asarray(array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array)
    if pixels.ndim >= 3:
        if pixels.dtype.kind == "f" and pixels.size and float(np.nanmax(pixels)) <= 1.0:
            pixels = np.clip(pixels, 0.0, 1.0) * 255.0
        return PILImage.fromarray(pixels.astype(np.uint8))
    native = pixels.dtype.newbyteorder("=")
    size = native.itemsize
    while np.dtype(f"{native.kind}{size}") not in _PIL_ARRAY_DTYPES:
        size //= 2
        if size < 1 or native.kind not in "biuf":
            raise LitStreamingTypeError(f"an image cannot be made of a {pixels.dtype} array")
    return PILImage.fromarray(pixels.astype(f"{native.kind}{size}"))


def _encode_pil(image: Any, fmt: str, quality: int | None, mode: str | None) -> tuple[bytes, str]:
    if mode and image.mode != mode:
        image = image.convert(mode)
    fmt = "JPEG" if fmt.upper() in ("JPG", "JPEG") else fmt.upper()
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    options: dict[str, Any] = {"format": fmt}
    if quality is not None and fmt in ("JPEG", "WEBP"):
        options["quality"] = int(quality)
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue(), "jpg" if fmt == "JPEG" else fmt.lower()


_GRAPH_MAGIC = b"LDGR"
_U16_BE = struct.Struct(">H")
_U32_BE = struct.Struct(">I")


class GraphSerializer(Serializer):
    """LitData's ``graph`` leaves (a PyG ``Data.to_dict()`` packed as named tensors plus a small pickled map of
    the structure, versions 1-3). Read as ``torch_geometric`` ``Data``/``HeteroData`` when that is installed,
    else as the plain dict. The structure map holds only builtin containers, so it loads through the
    restricted unpickler; opaque graphs are ``graph:pickle`` and need ``allow_pickle``."""

    name = "graph"

    def can_serialize(self, obj: Any) -> bool:
        return False

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        raise LitStreamingTypeError("graph leaves are read, not written: store the graph's tensors as a dict")

    def deserialize(self, data: Buffer, fmt: str) -> Any:
        view = memoryview(data)
        if bytes(view[:4]) != _GRAPH_MAGIC or len(view) < 6:
            raise LitStreamingValueError("graph payload does not start with the LDGR pack header")
        version, pos = view[4], 5
        if version not in (1, 2, 3):
            raise LitStreamingValueError(f"graph pack version {version} is not one of 1, 2, 3")
        wide = version >= 3
        n_fields, pos = self._uint(view, pos, wide)
        values: dict[str, Any] = {}
        for _ in range(n_fields):
            name_len, pos = self._uint(view, pos, wide)
            name = str(self._slice(view, pos, name_len), "utf-8")
            pos += name_len
            kind = 0
            if version >= 2:
                kind, pos = self._slice(view, pos, 1)[0], pos + 1
            (size,), pos = _U32_BE.unpack(self._slice(view, pos, 4)), pos + 4
            payload = self._slice(view, pos, size)
            pos += size
            if kind == 1 or name == "_meta":
                values.update(restricted_unpickle(payload))
            else:
                values[name] = _SERIALIZERS["tensor"].deserialize(bytearray(payload), "tensor")
        return _graph_from_values(values)

    @staticmethod
    def _slice(view: memoryview, pos: int, size: int) -> memoryview:
        if pos + size > len(view):
            raise LitStreamingValueError(f"graph payload of {len(view)} bytes is truncated at byte {pos}")
        return view[pos : pos + size]

    def _uint(self, view: memoryview, pos: int, wide: bool) -> tuple[int, int]:
        if wide:
            return _U16_BE.unpack(self._slice(view, pos, 2))[0], pos + 2
        return self._slice(view, pos, 1)[0], pos + 1


def _fill_graph(tree: Any, tensors: dict[tuple[Any, ...], Any], prefix: tuple[Any, ...] = ()) -> Any:
    if tree == "__ldgr_t__":
        return tensors[prefix]
    if isinstance(tree, dict):
        return {key: _fill_graph(value, tensors, (*prefix, key)) for key, value in tree.items()}
    return tree


def _graph_from_values(values: dict[str, Any]) -> Any:
    tree, paths, fields = values.pop("_tree", None), values.pop("_paths", None), values.pop("_fields", None)
    cls = values.pop("_cls", "data")
    if tree is not None and paths is not None and fields is not None:
        values = _fill_graph(tree, {tuple(p): values[f] for p, f in zip(paths, fields, strict=False)})
    try:
        from torch_geometric.data import Data, HeteroData
    except ImportError:
        return values
    return (HeteroData if cls == "hetero" else Data).from_dict(values)


def _checked_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for the restricted unpickler: object dtypes would let a payload smuggle objects."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise PickleNotAllowedError(
            f"the pickled leaf holds an object dtype ({dtype}); pass allow_pickle=True"
        )
    return dtype


def _numpy_multiarray() -> Any:
    try:
        return importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


_MULTIARRAY = _numpy_multiarray()
# What LitData's writer pickles most (numpy scalars such as ``labels[i]``, 0-d arrays): rebuilding them runs
# only these numpy constructors, so they are safe to read without ``allow_pickle``. Both module spellings
# appear in files: numpy 2 pickles ``numpy._core``, numpy 1 ``numpy.core``.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "dtype"): _checked_dtype,
    ("numpy", "ndarray"): np.ndarray,
}
for _module in ("numpy._core.multiarray", "numpy.core.multiarray"):
    _SAFE_GLOBALS[(_module, "scalar")] = _MULTIARRAY.scalar
    _SAFE_GLOBALS[(_module, "_reconstruct")] = _MULTIARRAY._reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers, numbers, strings and numpy scalars/arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise PickleNotAllowedError(
                f"the pickled leaf needs {module}.{name}; unpickling anything but numpy scalars and arrays runs "
                "arbitrary code from the dataset files, so pass allow_pickle=True only if you trust whoever "
                "wrote the data"
            )
        return found


def restricted_unpickle(data: Buffer) -> Any:
    """Load a pickle that may only rebuild numpy scalars, dtypes and arrays (and builtin containers)."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except PickleNotAllowedError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError) as err:
        raise LitStreamingValueError(f"pickle payload of {len(data)} bytes is corrupt: {err}") from err


class PickleSerializer(Serializer):
    """Anything else, via ``pickle.dumps`` (default protocol, as LitData).

    Reading arbitrary pickles executes code from the file, so an instance built without ``allow_pickle``
    reads only what ``restricted_unpickle`` allows (numpy scalars and arrays: what LitData pickles for
    ``np.float32(x)``) and refuses the rest with ``PickleNotAllowedError``.
    """

    name = "pickle"

    def __init__(self, allow_pickle: bool = False) -> None:
        self.allow_pickle = allow_pickle

    def can_serialize(self, obj: Any) -> bool:
        return True

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        return pickle.dumps(obj), self.name

    def deserialize(self, data: Buffer, fmt: str) -> Any:
        if not self.allow_pickle:
            return restricted_unpickle(data)
        return pickle.loads(data)  # noqa: S301 - the caller opted in


# Writing: the first serializer in this order that accepts a leaf wins (LitData's order, less the kinds we
# only read). Wrapper types and ``JsonLeaf`` are accepted by exactly one serializer, so where they sit is moot.
SERIALIZER_ORDER: tuple[str, ...] = (
    "str", "text", "bool", "int", "float", "video", "audio", "image", "tifffile", "file", "pil", "jpeg",
    "bytes", "no_header_numpy", "numpy", "numpy:scalar", "no_header_tensor", "tensor", "json", "pickle",
)  # fmt: skip
# Read-only kinds LitData 0.2.76 writes that this writer does not produce.
READ_ONLY_FORMATS: tuple[str, ...] = ("tiff", "pdf", "mesh", "nifti", "graph", "jpeg_array")
MEDIA_KINDS: tuple[str, ...] = tuple(_MEDIA_DECODERS)  # kinds a loader may be asked to decode

_SERIALIZERS: dict[str, Serializer] = {
    s.name: s
    for s in (
        StrSerializer(), TextSerializer(), BoolSerializer(), IntSerializer(), FloatSerializer(),
        MediaSerializer("video"), MediaSerializer("audio"), ImageSerializer(), TiffSerializer(),
        MediaSerializer("file"), MediaSerializer("pdf"), MediaSerializer("mesh"), MediaSerializer("nifti"),
        GraphSerializer(), PilSerializer(), JpegSerializer(), JpegArraySerializer(), BytesSerializer(),
        NoHeaderNumpySerializer(), NumpySerializer(), NumpyScalarSerializer(), NoHeaderTensorSerializer(),
        TensorSerializer(), JsonSerializer(), PickleSerializer(),
    )
}  # fmt: skip
_SERIALIZERS["tiff"] = _SERIALIZERS["tifffile"]
_ORDERED: tuple[Serializer, ...] = tuple(_SERIALIZERS[name] for name in SERIALIZER_ORDER)
_TRUSTED_PICKLE = PickleSerializer(allow_pickle=True)
# Exact builtin types skip the ordered scan; no earlier serializer accepts them, so the result is the same.
_BY_TYPE: dict[type, Serializer] = {t: _SERIALIZERS[t.__name__] for t in (str, bool, int, float, bytes)}
_DTYPE_SUFFIXED = ("no_header_numpy", "no_header_tensor")
_EXT_SUFFIXED = ("image", "video", "audio", "file", "mesh", "nifti")


def serializer_for(obj: Any) -> Serializer:
    """The first serializer in ``SERIALIZER_ORDER`` that accepts ``obj`` (pickle accepts anything)."""
    found = _BY_TYPE.get(type(obj))
    if found is not None:
        return found
    for serializer in _ORDERED[:-1]:
        if serializer.can_serialize(obj):
            return serializer
    if type(obj).__module__ == "litdata.types":
        raise LitStreamingTypeError(
            f"litdata.{type(obj).__name__} leaves are not written by this library (they would be pickled); "
            "use Image/Video/Audio/File/Text/Tiff, a PIL image or a tensor instead"
        )
    return _ORDERED[-1]


# Leaf kinds whose stored name carries a file extension that does not change how they are read: samples may
# differ in it (a folder of .jpg and .png images), and the column keeps the first sample's name, as LitData.
_EXTENSION_KINDS = ("image", "video", "audio", "file")


def same_column(first: str, other: str) -> bool:
    """Whether a leaf stored as ``other`` may share a column whose first sample stored ``first``."""
    if first == other or {first, other} <= {"pil", "jpeg"}:
        return True
    kind, colon, _ = first.partition(":")
    return bool(colon) and kind in _EXTENSION_KINDS and other.partition(":")[0] == kind


def _unknown(fmt: str, why: str = "") -> UnknownSerializerError:
    return UnknownSerializerError(
        f"unknown serializer format {fmt!r}{why}; supported: {', '.join(sorted(set(_SERIALIZERS)))} "
        f"({', '.join(_DTYPE_SUFFIXED)} take ':<dtype index>', {', '.join(_EXT_SUFFIXED)} ':<extension>')"
    )


def _resolve(fmt: str) -> Serializer:
    """The registered serializer for a stored name, following LitData's lookup: ``base:sub`` is read by the
    serializer named ``sub`` when there is one (``image:jpeg`` by ``jpeg``, ``graph:pickle`` by ``pickle``),
    else by ``base``; a bare name must be registered as it is."""
    if fmt in _SERIALIZERS:
        if fmt in _DTYPE_SUFFIXED:
            raise _unknown(fmt, ": it needs a ':<dtype index>' suffix")
        return _SERIALIZERS[fmt]
    base, colon, sub = fmt.partition(":")
    if not colon or not sub or ":" in sub:
        raise _unknown(fmt)
    if base == "no_header_numpy":
        _numpy_dtype(_dtype_index(fmt, len(NUMPY_DTYPES)))
        return _SERIALIZERS[base]
    if base == "no_header_tensor":
        _dtype_index(fmt, len(TORCH_DTYPES))
        return _SERIALIZERS[base]
    if sub in _SERIALIZERS and base in _SERIALIZERS:
        return _SERIALIZERS[sub]
    if base in _EXT_SUFFIXED:
        return _SERIALIZERS[base]
    raise _unknown(fmt)


def serializer_named(
    fmt: str, *, allow_pickle: bool = False, decode: Mapping[str, str] | None = None
) -> Serializer:
    """The serializer for a stored ``data_format`` entry such as ``"int"``, ``"no_header_numpy:9"`` or
    ``"image:png"``; an unknown name raises ``UnknownSerializerError`` naming it.

    ``allow_pickle=True`` returns a pickle serializer that unpickles anything; the default one reads only
    numpy scalars and arrays. ``decode`` maps media kinds (``MEDIA_KINDS``: video, audio, pdf, mesh, nifti) to
    ``"bytes"`` (the default) or ``"decode"``.
    """
    found = _resolve(fmt)
    if found.name == "pickle" and allow_pickle:
        return _TRUSTED_PICKLE
    if isinstance(found, MediaSerializer) and decode and decode.get(found.name, "bytes") != found.mode:
        return MediaSerializer(found.name, decode[found.name])
    return found


def serialize_leaf(obj: Any) -> tuple[bytes | memoryview, str]:
    """Encode one leaf with the first serializer that accepts it; returns (payload, format name)."""
    return serializer_for(obj).serialize(obj)
