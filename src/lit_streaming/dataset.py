"""StreamingDataset: random access (``ds[i]``) and iteration over an optimized dataset.

The order of iteration is not decided here: ``lit_streaming.sampling`` computes it from integers and seeds.
This class only asks "who am I?" (rank, worker, epoch, resume point) when iteration starts, and reads.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lit_streaming import profiling, sampling
from lit_streaming.chunks import OpenChunks
from lit_streaming.format.units import parse_size
from lit_streaming.formats import open_dataset
from lit_streaming.item_loaders import ItemLoader
from lit_streaming.storage import open_source
from lit_streaming.stream import Stream


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while an index is parsed, then restore its previous state.

    Parsing builds a few objects per chunk and none of them form cycles, yet on an index of 200,000 chunks
    the collector's repeated full passes over them were half the start-up time (1.5 s of 2.9 s measured).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class StreamingDataset(Stream):
    """Streams samples from an optimized dataset folder or URL.

    Args:
        input_dir: dataset folder or fsspec URL (``s3://...``, ``local:/nfs/...``) holding ``index.json`` and
            the chunk files.
        cache_dir: root of the node-local cache shared by all datasets (each dataset version gets its own
            folder in it); default ``$LIT_STREAMING_CACHE_DIR`` or ``~/.cache/lit_streaming``.
        max_cache_size: disk budget for this dataset's cached chunks (``"50GB"``); remote datasets only.
        storage_options: passed to this dataset's own fsspec filesystem (endpoint_url, key, secret, anon...).
        item_loader: ``TokensLoader(block_size)`` for token datasets; the default reads any pytree sample.
        shuffle: a new order every epoch from (seed, epoch), mixed across ``shuffle_window`` chunks.
        drop_last: ``True`` drops fewer than world_size x batch_size samples so every rank yields only full
            batches; ``False`` pads ranks with fewer than world_size repeats. ``None`` means ``True`` when
            running distributed and ``False`` otherwise (LitData's default).
        subsample: fraction of the dataset to use (> 1 repeats samples), fixed by ``seed``.
        transform: applied to every sample returned by ``ds[i]`` and by iteration.
        allow_pickle: read ``pickle`` leaves. Unpickling runs code, so it is off unless you trust the data.
        shuffle_window: how many chunks are mixed together when shuffling (more mixing, more open chunks).
        format: the on-disk format, detected from what is at ``input_dir`` when None: ``"litdata"``, ``"mds"``
            (MosaicML Streaming), ``"wds"`` (WebDataset tars), ``"parquet"`` (LitData's Parquet index).
    """

    def __init__(
        self,
        input_dir: str | os.PathLike,
        cache_dir: str | None = None,
        item_loader: ItemLoader | None = None,
        shuffle: bool = False,
        drop_last: bool | None = None,
        seed: int = 42,
        max_cache_size: int | str = "100GB",
        subsample: float = 1.0,
        storage_options: dict[str, Any] | None = None,
        transform: Callable[[Any], Any] | None = None,
        allow_pickle: bool = False,
        shuffle_window: int = sampling.DEFAULT_SHUFFLE_WINDOW,
        format: str | None = None,
    ) -> None:
        if not isinstance(shuffle_window, int) or shuffle_window < 1:
            raise ValueError(f"`shuffle_window` must be a positive int (chunks), got {shuffle_window!r}")
        super().__init__()
        self.input_dir = os.fspath(input_dir)
        self.cache_dir = cache_dir
        self.shuffle = bool(shuffle)
        self.drop_last = drop_last
        self.seed = int(seed)
        self.max_cache_size = parse_size(max_cache_size, "max_cache_size")
        self.subsample = float(subsample)
        self.storage_options = storage_options
        self.transform = transform
        self.allow_pickle = allow_pickle
        self.shuffle_window = shuffle_window

        self._source = open_source(self.input_dir, cache_dir, storage_options, self.max_cache_size)
        with _collector_paused():
            self._format = open_dataset(self._source, format, item_loader, allow_pickle)
        self._index = self._format.index
        self.item_loader = self._format.reader
        self.chunk_lengths = self._format.chunk_lengths
        self._chunk_offsets = np.concatenate([[0], np.cumsum(self.chunk_lengths)])
        self.num_samples = int(self._chunk_offsets[-1])
        self._epoch_samples = sampling.subsample_count(self.num_samples, self.subsample)
        self._chunks = OpenChunks(self._source, self._format, capacity=shuffle_window + 4)
        self._recorder: profiling.TraceRecorder | None = None
        self._geometry: sampling.ChunkGeometry | None = None
        self._window: int | None = None  # the shuffle window the cache budget allows (fit_window)
        self._window_warned: tuple[int, int] | None = None

    # ---- random access -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Samples in one epoch of the whole dataset (after ``subsample``)."""
        return self._epoch_samples

    def __getitem__(self, index: int) -> Any:
        """Sample ``index`` of the stored dataset (0 <= index < num_samples), transformed; iteration reads
        through this too."""
        sample = self.read_sample(int(index))
        return self.transform(sample) if self.transform is not None else sample

    def read_sample(self, index: int) -> Any:
        if not 0 <= index < self.num_samples:
            raise IndexError(
                f"Index {index} out of range for dataset {self.input_dir} of {self.num_samples} samples"
            )
        k = int(np.searchsorted(self._chunk_offsets, index, side="right")) - 1
        recorder = self._recorder
        if recorder is None:
            return self.item_loader.load(self._chunks.get(k), index - int(self._chunk_offsets[k]))
        t0 = profiling.now_us()
        view = self._chunks.get(k)
        t1 = profiling.now_us()
        sample = self.item_loader.load(view, index - int(self._chunk_offsets[k]))
        t2 = profiling.now_us()
        recorder.span("fetch", "io", t0, t1, chunk=k)
        recorder.span("decode", "decode", t1, t2, sample=index)
        recorder.span("sample", "worker", t0, t2, sample=index)
        return sample

    def set_recorder(self, recorder: profiling.TraceRecorder | None) -> None:
        """Record fetch/decode spans into ``recorder`` (``None`` stops recording)."""
        self._recorder = recorder

    # ---- the Stream protocol -------------------------------------------------------------------------------
    def leaves(self) -> list[StreamingDataset]:
        return [self]

    def drop_last_for(self, world_size: int) -> bool:
        return self.drop_last if self.drop_last is not None else world_size > 1

    @property
    def geometry(self) -> sampling.ChunkGeometry:
        """Items and epoch ids per chunk (the subsample draw, made once per process)."""
        if self._geometry is None:
            self._geometry = sampling.dataset_geometry(self.chunk_lengths, self.subsample, self.seed)
        return self._geometry

    def native_length(self, world_size: int, batch_size: int) -> int:
        return sampling.rank_length(
            self._epoch_samples, world_size, batch_size, self.drop_last_for(world_size)
        )

    def rank_plan(self, epoch: int, world_size: int, rank: int, batch_size: int) -> sampling.KeySequence:
        return sampling.dataset_plan(
            self.geometry,
            epoch=epoch,
            shuffle=self.shuffle,
            drop_last=self.drop_last_for(world_size),
            world_size=world_size,
            rank=rank,
            batch_size=batch_size,
            shuffle_window=self._window or self.shuffle_window,
        )

    def fit_window(self, readers: int) -> int:
        """The shuffle window (and open-chunk limit) that ``readers`` readers of this dataset on one machine can
        keep within ``max_cache_size``: the cache bound is hard, so mixing gives way (with one warning)."""
        budget = self._source.chunks_per_reader(readers)
        window = self.shuffle_window if budget is None else max(1, min(self.shuffle_window, budget))
        if window < self.shuffle_window and (window, readers) != self._window_warned:
            self._window_warned = (window, readers)
            largest = max((shard.budget_bytes for shard in self._format.table.shards), default=0)
            need = readers * self.shuffle_window * largest
            warnings.warn(
                f"{self.input_dir}: max_cache_size={self.max_cache_size} bytes holds {budget} chunks per reader "
                f"for {readers} readers on this machine, so the shuffle window shrinks from {self.shuffle_window} "
                f"to {window} chunks (each batch mixes samples of ~{window} chunks instead of "
                f"~{self.shuffle_window}); max_cache_size of about {need} bytes (plus index.json) restores it",
                stacklevel=2,
            )
        self._window = window
        self._chunks.capacity = window if budget is not None else self.shuffle_window + 4
        return window

    def order_settings(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "num_samples": self.num_samples,
            "num_chunks": len(self.chunk_lengths),
            "geometry": self.geometry_fingerprint(),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "subsample": self.subsample,
            "shuffle_window": self.shuffle_window,
            **self.item_loader.settings(),
        }

    def geometry_fingerprint(self) -> str:
        """A digest of the items per chunk: a dataset re-optimized with another chunking has a new one even at
        the same length, so a resume state saved on the old one is refused instead of repeating samples."""
        return hashlib.sha256(np.ascontiguousarray(self.chunk_lengths, dtype="<i8").tobytes()).hexdigest()[
            :16
        ]

    def _apply_options(self, shuffle: bool | None, drop_last: bool | None) -> None:
        if shuffle is not None:
            self.shuffle = bool(shuffle)
        if drop_last is not None:
            self.drop_last = bool(drop_last)
        self._recorder = None
        self._chunks = copy.copy(self._chunks)  # this copy's readers open (and release) their own chunks

    def prefetch_chunks(self, chunks: list[int]) -> None:
        """Tell the source which chunks will be read, in order, so remote ones download ahead."""
        self._source.prefetch(chunks)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.input_dir!r}, samples={self.num_samples}, shuffle={self.shuffle})"
        )
