"""Write side of lit-streaming: turn raw data into LitData-compatible chunked datasets.

Importing it loads the on-disk format and the writer, never the read side's dataset, loader or cache.
``Image``, ``Video``, ``Audio``, ``File``, ``Text`` and ``Tiff`` are LitData's leaf wrappers (``litdata.Image``
and friends): return them from ``fn`` to store a file or an encoded image as it is.
"""

from lit_streaming.errors import LitStreamingError
from lit_streaming.format.serializers import Audio, File, Image, Text, Tiff, Video
from lit_streaming_writer.errors import InputError, WorkerError
from lit_streaming_writer.map import map
from lit_streaming_writer.merge import merge_datasets
from lit_streaming_writer.optimize import DatasetExistsError, optimize
from lit_streaming_writer.walk import walk
from lit_streaming_writer.writer import ChunkWriter, SampleStructureError

__all__ = [
    "Audio",
    "ChunkWriter",
    "DatasetExistsError",
    "File",
    "Image",
    "InputError",
    "LitStreamingError",
    "SampleStructureError",
    "Text",
    "Tiff",
    "Video",
    "WorkerError",
    "map",
    "merge_datasets",
    "optimize",
    "walk",
]
