"""Write side of lit-streaming: turn raw data into LitData-compatible chunked datasets."""

from lit_streaming_writer.errors import InputError, WorkerError
from lit_streaming_writer.map import map
from lit_streaming_writer.optimize import DatasetExistsError, optimize
from lit_streaming_writer.writer import ChunkWriter, SampleStructureError

__all__ = [
    "ChunkWriter",
    "DatasetExistsError",
    "InputError",
    "SampleStructureError",
    "WorkerError",
    "map",
    "optimize",
]
