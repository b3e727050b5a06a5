"""lit-streaming: stream LitData-format datasets into PyTorch Lightning, exactly once, resumable.

Every public name is imported on first use (PEP 562 ``__getattr__``), not here: ``import lit_streaming.sampling``
or ``lit_streaming.format`` then costs numpy only, the writer package (which uses ``lit_streaming.format``)
does not drag in the loader, and only users of the DataModule pay for Lightning. ``from lit_streaming import
optimize, map`` gives the writer's operators, so a LitData script ports with one import line.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "CombinedStreamingDataset": "lit_streaming.combined",
    "LitStreamingError": "lit_streaming.errors",
    "MissingIndexError": "lit_streaming.formats",
    "ParallelStreamingDataset": "lit_streaming.parallel",
    "PyTreeLoader": "lit_streaming.item_loaders",
    "ResumeError": "lit_streaming.dataloader",
    "StreamingDataLoader": "lit_streaming.dataloader",
    "StreamingDataModule": "lit_streaming.datamodule",
    "StreamingDataset": "lit_streaming.dataset",
    "StreamingRawDataset": "lit_streaming.raw",
    "TokensLoader": "lit_streaming.item_loaders",
    "train_test_split": "lit_streaming.splits",
    # the writer's operators, as ``litdata`` exports them
    "map": "lit_streaming_writer.map",
    "merge_datasets": "lit_streaming_writer.merge",
    "optimize": "lit_streaming_writer.optimize",
    "walk": "lit_streaming_writer.walk",
    # LitData's leaf wrappers for ``optimize`` (``ld.Image(path=...)``)
    "Audio": "lit_streaming.format.serializers",
    "File": "lit_streaming.format.serializers",
    "Image": "lit_streaming.format.serializers",
    "Text": "lit_streaming.format.serializers",
    "Tiff": "lit_streaming.format.serializers",
    "Video": "lit_streaming.format.serializers",
}

__all__ = [
    "Audio",
    "CombinedStreamingDataset",
    "File",
    "Image",
    "LitStreamingError",
    "MissingIndexError",
    "ParallelStreamingDataset",
    "PyTreeLoader",
    "ResumeError",
    "StreamingDataLoader",
    "StreamingDataModule",
    "StreamingDataset",
    "StreamingRawDataset",
    "Text",
    "Tiff",
    "TokensLoader",
    "Video",
    "map",
    "merge_datasets",
    "optimize",
    "train_test_split",
    "walk",
]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from lit_streaming.combined import CombinedStreamingDataset
    from lit_streaming.dataloader import ResumeError, StreamingDataLoader
    from lit_streaming.datamodule import StreamingDataModule
    from lit_streaming.dataset import StreamingDataset
    from lit_streaming.errors import LitStreamingError
    from lit_streaming.format.serializers import Audio, File, Image, Text, Tiff, Video
    from lit_streaming.formats import MissingIndexError
    from lit_streaming.item_loaders import PyTreeLoader, TokensLoader
    from lit_streaming.parallel import ParallelStreamingDataset
    from lit_streaming.raw import StreamingRawDataset
    from lit_streaming.splits import train_test_split
    from lit_streaming_writer.map import map
    from lit_streaming_writer.merge import merge_datasets
    from lit_streaming_writer.optimize import optimize
    from lit_streaming_writer.walk import walk


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # ``lit_streaming.dataset`` after a bare ``import lit_streaming`` kept working when this file imported
        # the submodules eagerly: import a submodule on first access too.
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'lit_streaming' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
