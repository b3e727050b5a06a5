"""One error root: every error class of the library derives from ``LitStreamingError`` and keeps its builtin
base; a missing index is the same error wherever the dataset lives."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import lit_streaming
import lit_streaming_writer
from lit_streaming import LitStreamingError, MissingIndexError, StreamingDataset

# The builtin each error has always been (code that catches the builtin must keep working).
BUILTIN_BASES = {
    "lit_streaming.format.serializers.UnknownSerializerError": ValueError,
    "lit_streaming.format.serializers.PickleNotAllowedError": ValueError,
    "lit_streaming.format.index.InvalidIndexError": ValueError,
    "lit_streaming.format.chunk.CorruptChunkError": ValueError,
    "lit_streaming.formats.base.FormatError": ValueError,
    "lit_streaming.formats.base.CorruptShardError": ValueError,
    "lit_streaming.formats.base.UnknownFormatError": ValueError,
    "lit_streaming.formats.base.MissingIndexError": FileNotFoundError,
    "lit_streaming.formats.base.MissingExtraError": ImportError,
    "lit_streaming.storage.errors.StorageError": OSError,
    "lit_streaming.storage.errors.RemoteFileNotFoundError": FileNotFoundError,
    "lit_streaming.storage.errors.CacheTimeoutError": TimeoutError,
    "lit_streaming.storage.errors.ChunkIntegrityError": ValueError,
    "lit_streaming.storage.transfer.DownloadStalledError": TimeoutError,
    "lit_streaming.engine.resume_state.ResumeError": ValueError,
    "lit_streaming_writer.errors.InputError": RuntimeError,
    "lit_streaming_writer.errors.WorkerError": RuntimeError,
    "lit_streaming_writer.optimize.DatasetExistsError": FileExistsError,
    "lit_streaming_writer.writer.SampleStructureError": ValueError,
}


def _library_errors() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in (lit_streaming, lit_streaming_writer):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == info.name:
                    found[f"{info.name}.{obj.__qualname__}"] = obj
    return found


def test_every_library_error_derives_from_one_root_and_keeps_its_builtin_base() -> None:
    errors = _library_errors()
    assert set(BUILTIN_BASES) <= set(errors)
    assert [name for name, cls in errors.items() if not issubclass(cls, LitStreamingError)] == []
    assert [name for name, base in BUILTIN_BASES.items() if not issubclass(errors[name], base)] == []
    assert lit_streaming_writer.LitStreamingError is LitStreamingError


@pytest.mark.parametrize("format", [None, "litdata", "mds", "parquet"])
def test_a_missing_index_is_one_error_locally_and_on_s3(tmp_path, s3_bucket, format) -> None:
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": options["endpoint_url"]}, key="testing", secret="testing"
    )
    fs.pipe(f"{bucket}/ds/readme.txt", b"not a dataset")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "readme.txt").write_bytes(b"not a dataset")
    raised = []
    for url, storage_options in ((str(tmp_path / "ds"), None), (f"{bucket}/ds", options)):
        with pytest.raises(MissingIndexError, match=r"No index\.json at .*ds/index\.json") as info:
            StreamingDataset(
                url, storage_options=storage_options, cache_dir=str(tmp_path / "cache"), format=format
            )
        raised.append(type(info.value))
    assert raised[0] is raised[1]
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_argument_errors_derive_from_the_root_too(tmp_path) -> None:
    """Plain argument checks raise LitStreamingError subclasses that are still ValueError/TypeError."""
    from lit_streaming import LitStreamingError, StreamingDataLoader, sampling
    from lit_streaming.combined import CombinedStreamingDataset

    for call, builtin in (
        (lambda: sampling.rank_length(10, 0, 1, True), ValueError),
        (lambda: CombinedStreamingDataset([object()]), TypeError),
        (lambda: StreamingDataLoader(object()), TypeError),
    ):
        with pytest.raises(LitStreamingError) as caught:
            call()
        assert isinstance(caught.value, builtin)
