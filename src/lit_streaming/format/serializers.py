"""Leaf serializers, byte-compatible with LitData 0.2.76.

Every pytree leaf of a sample is stored as one payload plus a format name in ``data_format``.
The byte layouts match LitData exactly so that datasets written by either library read in the
other (see DESIGN.md section 4). Deserializers are on the read hot path, so they build arrays and
tensors directly on the given buffer (usually a memoryview of an mmap'ed chunk) instead of
copying: the results are *read-only* views that keep the buffer alive. Call ``.copy()`` /
``.clone()`` before writing to them. All multi-byte fields assume a little-endian host, as
LitData does.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import sys
import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

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


class UnknownSerializerError(ValueError):
    """A ``data_format`` entry names a serializer this library does not implement."""


class PickleNotAllowedError(ValueError):
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


_readonly_warning_spent = False


def _frombuffer_tensor(data: Buffer, dtype: torch.dtype) -> torch.Tensor:
    """Zero-copy tensor over ``data``. Torch warns for read-only buffers; we document that instead.

    Torch emits that warning once per process (TORCH_WARN_ONCE), so only the first read-only call
    pays for ``catch_warnings`` (about 2 us, as much as the rest of a small tensor's decode).
    """
    global _readonly_warning_spent
    if _readonly_warning_spent:
        return torch.frombuffer(data, dtype=dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        tensor = torch.frombuffer(data, dtype=dtype)
    _readonly_warning_spent = isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly)
    return tensor


def _check_payload(kind: str, shape: tuple[int, ...], itemsize: int, got: int) -> None:
    expected = math.prod(shape) * itemsize
    if expected != got:
        raise ValueError(
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
            raise ValueError(f"bool payload must be 1 byte, got {len(data)}")
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
            raise ValueError(f"int leaf {obj} does not fit in int64; store it as a str instead") from exc

    def deserialize(self, data: Buffer, fmt: str) -> int:
        if len(data) != 8:
            raise ValueError(f"int payload must be 8 bytes, got {len(data)}")
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
            raise ValueError(f"float payload must be 8 bytes, got {len(data)}")
        return _F64.unpack(data)[0]


def _pil_raw_size(mode: str, width: int, height: int) -> int:
    """Bytes of ``Image.tobytes()`` for a mode, computed without allocating the image."""
    from PIL import ImageMode

    try:
        desc = ImageMode.getmode(mode)
    except KeyError:
        raise ValueError(f"pil payload has unknown image mode {mode!r}") from None
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
        pil_image = sys.modules.get("PIL.Image")
        return pil_image is not None and isinstance(obj, pil_image.Image) and not _is_jpeg_file(obj)

    def serialize(self, obj: Any) -> tuple[bytes, str]:
        mode = obj.mode.encode("ascii")
        width, height = obj.size
        return _U32X3.pack(width, height, len(mode)) + mode + obj.tobytes(), self.name

    def deserialize(self, data: Buffer, fmt: str) -> Any:
        from PIL import Image

        if len(data) < 12:
            raise ValueError(f"pil payload of {len(data)} bytes is shorter than its 12-byte header")
        width, height, mode_len = _U32X3.unpack_from(data)
        if 12 + mode_len > len(data):
            raise ValueError(f"pil payload of {len(data)} bytes cannot hold a {mode_len}-byte mode name")
        mode = bytes(data[12 : 12 + mode_len]).decode("ascii", errors="replace")
        raw = memoryview(data)[12 + mode_len :]
        expected = _pil_raw_size(mode, width, height)
        if expected != len(raw):
            raise ValueError(
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
            raise ValueError("The JPEG image has no filename attribute; open it inside __getitem__.")
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
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            with warnings.catch_warnings():
                # torchvision >= 0.29 warns on every call that its decoders will move to torchcodec.
                warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
                return decode_jpeg(_frombuffer_tensor(data, torch.uint8), mode=ImageReadMode.RGB)
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
            raise ValueError(f"{fmt} payload of {len(data)} bytes is not a multiple of {dtype.itemsize}")
        return np.frombuffer(data, dtype=dtype)


def _numpy_dtype(index: int) -> np.dtype:
    if index >= len(_NUMPY_INDEX):
        raise ValueError(f"numpy dtype index {index} ({NUMPY_DTYPES[index]}) has no raw encoding")
    return NUMPY_DTYPES[index]


def _shape_header(byteorder: str, index: int, shape: tuple[int, ...]) -> bytes:
    if any(dim >= 2**32 for dim in shape):
        raise ValueError(f"shape {shape} has a dimension too large for the u32 header")
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
            raise ValueError(f"numpy payload of {len(data)} bytes is shorter than its 8-byte header")
        index, ndim = _U32X2_LE.unpack_from(data)
        if index >= len(NUMPY_DTYPES) or ndim > _MAX_NDIM or 8 + 4 * ndim > len(data):
            raise ValueError(f"numpy payload header (dtype index {index}, ndim {ndim}) is corrupt")
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
            raise ValueError(f"{fmt} payload of {len(data)} bytes is not a multiple of {dtype.itemsize}")
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
            raise ValueError(
                f"tensor payload of {len(data)} bytes has a header that matches neither byte order "
                "(dtype index, ndim and dims disagree with the payload length): the data is corrupt"
            )
        dtype, shape, start = parsed
        if start == len(data):
            return torch.empty(shape, dtype=dtype)
        return _frombuffer_tensor(memoryview(data)[start:], dtype).reshape(shape)


class PickleSerializer(Serializer):
    """Anything else, via ``pickle.dumps`` (default protocol, as LitData).

    Reading executes code from the file, so an instance refuses unless built with ``allow_pickle``.
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
            raise _pickle_refusal()
        return pickle.loads(data)  # noqa: S301 - the caller opted in


SERIALIZER_ORDER: tuple[str, ...] = (
    "str", "bool", "int", "float", "pil", "jpeg", "bytes",
    "no_header_numpy", "numpy", "no_header_tensor", "tensor", "pickle",
)  # fmt: skip

_SERIALIZERS: dict[str, Serializer] = {
    s.name: s
    for s in (
        StrSerializer(), BoolSerializer(), IntSerializer(), FloatSerializer(), PilSerializer(),
        JpegSerializer(), BytesSerializer(), NoHeaderNumpySerializer(), NumpySerializer(),
        NoHeaderTensorSerializer(), TensorSerializer(), PickleSerializer(),
    )
}  # fmt: skip
_ORDERED: tuple[Serializer, ...] = tuple(_SERIALIZERS[name] for name in SERIALIZER_ORDER)
_TRUSTED_PICKLE = PickleSerializer(allow_pickle=True)
# Exact builtin types skip the ordered scan; no earlier serializer accepts them, so the result is the same.
_BY_TYPE: dict[type, Serializer] = {t: _SERIALIZERS[t.__name__] for t in (str, bool, int, float, bytes)}
_BY_FORMAT: dict[str, Serializer] = {}


def serializer_for(obj: Any) -> Serializer:
    """The first serializer in ``SERIALIZER_ORDER`` that accepts ``obj`` (pickle accepts anything)."""
    found = _BY_TYPE.get(type(obj))
    if found is not None:
        return found
    for serializer in _ORDERED:
        if serializer.can_serialize(obj):
            return serializer
    raise AssertionError("unreachable: pickle accepts everything")


def serializer_named(fmt: str, *, allow_pickle: bool = False) -> Serializer:
    """The serializer for a stored ``data_format`` entry such as ``"int"`` or ``"no_header_numpy:9"``.

    ``allow_pickle=True`` returns a pickle serializer that actually unpickles; the default one refuses.
    """
    if fmt == "pickle" and allow_pickle:
        return _TRUSTED_PICKLE
    found = _BY_FORMAT.get(fmt)
    if found is not None:
        return found
    base, colon, _ = fmt.partition(":")
    found = _SERIALIZERS.get(base)
    takes_suffix = base in ("no_header_numpy", "no_header_tensor")
    if found is None or bool(colon) != takes_suffix:
        raise UnknownSerializerError(
            f"unknown serializer format {fmt!r}; supported: {', '.join(SERIALIZER_ORDER)} "
            "(no_header_numpy and no_header_tensor take a ':<dtype index>' suffix)"
        )
    if base == "no_header_numpy":
        _numpy_dtype(_dtype_index(fmt, len(NUMPY_DTYPES)))
    elif base == "no_header_tensor":
        _dtype_index(fmt, len(TORCH_DTYPES))
    _BY_FORMAT[fmt] = found
    return found


def serialize_leaf(obj: Any) -> tuple[bytes | memoryview, str]:
    """Encode one leaf with the first serializer that accepts it; returns (payload, format name)."""
    return serializer_for(obj).serialize(obj)


def deserialize_leaf(data: Buffer, fmt: str, allow_pickle: bool = False) -> Any:
    """Decode one leaf stored under format name ``fmt``. Pickle leaves need ``allow_pickle=True``."""
    return serializer_named(fmt, allow_pickle=allow_pickle).deserialize(data, fmt)
