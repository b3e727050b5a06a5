"""Write side of lit-streaming: turn raw data into LitData-compatible chunked datasets."""

from lit_streaming_writer.launch import WorkerError
from lit_streaming_writer.optimize import DatasetExistsError, InputError, optimize
from lit_streaming_writer.writer import ChunkWriter, SampleStructureError

__all__ = ["ChunkWriter", "DatasetExistsError", "InputError", "SampleStructureError", "WorkerError", "optimize"]
