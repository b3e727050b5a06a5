"""WebDataset values decoded by extension, as WebDataset's default decoders do, except that images become
uint8 RGB tensors (3, H, W) exactly as our ``image:*`` / ``jpeg`` leaves decode, and pickles need opting in.

The extension that counts is the last dotted part (``seg.png`` decodes as ``png``); anything unknown stays
``bytes``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from lit_streaming.formats.base import CorruptShardError

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "pbm", "pnm"})
UNSAFE_EXTENSIONS = frozenset({"pth", "pickle", "pkl", "pyd"})
_INTS = frozenset({"cls", "cls2", "index", "inx", "id"})
_TEXTS = frozenset({"txt", "text", "transcript"})
_JSONS = frozenset({"json", "jsn"})


def _image(data: memoryview) -> Any:
    from lit_streaming.format.serializers import ImageSerializer

    return ImageSerializer().deserialize(data, "image:wds")


def _npy(data: memoryview) -> Any:
    import numpy.lib.format

    return numpy.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def _npz(data: memoryview) -> Any:
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return dict(archive)


def _pickle(data: memoryview) -> Any:
    import pickle

    return pickle.loads(data)


def _torch(data: memoryview) -> Any:
    import torch

    return torch.load(io.BytesIO(data), weights_only=False)


def _decoder(ext: str) -> Callable[[memoryview], Any] | None:
    last = ext.rsplit(".", 1)[-1]
    if last in IMAGE_EXTENSIONS:
        return _image
    if last in _INTS:
        return lambda data: int(bytes(data))
    if last in _TEXTS:
        return lambda data: bytes(data).decode("utf-8")
    if last in _JSONS:
        return lambda data: json.loads(bytes(data))
    if last == "npy":
        return _npy
    if last == "npz":
        return _npz
    if last in ("pickle", "pkl", "pyd"):
        return _pickle
    if last == "pth":
        return _torch
    return None


def decode_value(ext: str, data: memoryview, allow_pickle: bool, what: str) -> Any:
    """The member's value; errors name the shard, sample and extension."""
    last = ext.rsplit(".", 1)[-1]
    if last in UNSAFE_EXTENSIONS and not allow_pickle:
        from lit_streaming.format.serializers import PickleNotAllowedError

        raise PickleNotAllowedError(f"{what}: pickled member refused; pass allow_pickle=True if you trust it")
    decode = _decoder(ext)
    if decode is None:
        return bytes(data)
    try:
        return decode(data)
    except Exception as err:
        raise CorruptShardError(f"{what}: cannot decode ({type(err).__name__}: {err})") from err
