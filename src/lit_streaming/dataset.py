"""StreamingDataset: random access (``ds[i]``) and iteration over an optimized dataset.

The order of iteration is not decided here: ``lit_streaming.sampling`` computes it from integers and seeds.
This class only asks "who am I?" (rank, worker, epoch, resume point) when iteration starts, and reads.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import operator
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from lit_streaming import sampling
from lit_streaming.engine import dataset_compat as compat
from lit_streaming.engine import profiling
from lit_streaming.engine.chunks import OpenChunks
from lit_streaming.errors import LitStreamingTypeError, LitStreamingValueError, is_positive_int
from lit_streaming.formats import open_dataset
from lit_streaming.item_loaders import ItemLoader
from lit_streaming.storage import StorageSettings, open_source
from lit_streaming.stream import Stream

#: Chunks a reader may keep open beyond its shuffle window when no cache budget bounds it, so that pieces
#: straddling two windows do not reopen chunks.
_OPEN_SLACK = 4
# The default window of local folders (see ``shuffle_window``): for batch size B and window W a batch mixes about
# W * (1 - (1 - 1/W) ** B) chunks; W = 320 gives 58.0 for B = 64, 91% of the 63.8 a full shuffle of 10,000 chunks
# gives (the share only grows for fewer chunks). Each open chunk holds a file descriptor (CPython's mmap keeps
# one), so a reader holds up to 324 of them.
LOCAL_SHUFFLE_WINDOW = 320
# A window's sample ids are drawn when it is entered, so it is also capped at about this many samples: chunks of
# thousands of samples (token blocks) get fewer chunks per window (7,808 blocks per chunk: 33), which keeps the
# ids at ~2 MB and a cold start from opening hundreds of chunks; their batches are small, and 33 chunks still
# give 90% of a full shuffle's distinct chunks for a batch of 8.
_LOCAL_WINDOW_IDS = 1 << 18


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
        max_cache_size: disk budget for this dataset's cached chunks (``"50GB"``, a fraction of the free disk such
            as ``0.9``, or ``None`` for LitData's 75% of it); remote datasets only.
        storage_options: passed to this dataset's own fsspec filesystem (endpoint_url, key, secret, anon...).
        item_loader: ``TokensLoader(block_size)`` for token datasets; the default reads any pytree sample.
        shuffle: a new order every epoch from (seed, epoch), mixed across ``shuffle_window`` chunks.
        drop_last: ``True`` drops fewer than world_size x batch_size samples so every rank yields only full
            batches; ``False`` pads ranks with fewer than world_size repeats. ``None`` means ``True`` when
            running distributed and ``False`` otherwise (LitData's default).
        subsample: fraction of the dataset to use (> 1 repeats samples), fixed by ``seed``.
        transform: a callable or a list of callables (applied in order) for every sample returned by ``ds[i]``,
            slices and iteration; without it, a subclass's ``transform(self, sample)`` method is used.
        allow_pickle: read ``pickle`` leaves. Unpickling runs code, so it is off unless you trust the data.
        shuffle_window: how many chunks are mixed together when shuffling (more mixing, more open chunks).
            ``None``: for a local folder, where an open chunk costs no cache space, 320 chunks (for batches
            of 64 that is >= 90% of the distinct chunks per batch a full shuffle gives, at any size) or as
            many as hold ~262,000 samples when chunks are larger (at least 16); 16 for remote data, whose
            window's chunks are downloaded before its first batch. Windows shrink to what ``max_cache_size``
            holds.
        format: the on-disk format, detected from what is at ``input_dir`` when None: ``"litdata"``, ``"mds"``
            (MosaicML Streaming), ``"wds"`` (WebDataset tars), ``"parquet"`` (LitData's Parquet index).
        storage_settings: retries, backoff, timeouts, prefetch depth and download concurrency of remote reads
            (:class:`lit_streaming.storage.StorageSettings`; None: its defaults); remote datasets only.

    LitData 0.2.76's other arguments (keyword-only here; see ``dataset_compat`` and the README's "LitData
    compatibility: reading"): ``max_pre_download`` chunks are fetched ahead of each reader; ``session_options``
    become s3fs options; ``index_path`` names the ``index.json`` (folder or file) when it lives elsewhere;
    ``force_override_state_dict``, ``num_canonical_nodes``, ``batch_decode`` and ``item_shuffle_window`` are
    validated and have no effect; ``serializers``, ``encryption`` and ``window_direct_io=True`` are refused.
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
        transform: Callable[[Any], Any] | Sequence[Callable[[Any], Any]] | None = None,
        allow_pickle: bool = False,
        shuffle_window: int | None = None,
        format: str | None = None,
        storage_settings: StorageSettings | None = None,
        *,
        serializers: dict[str, Any] | None = None,
        encryption: Any = None,
        session_options: dict[str, Any] | None = None,
        max_pre_download: int | None = None,
        index_path: str | os.PathLike | None = None,
        force_override_state_dict: bool = False,
        num_canonical_nodes: int | None = None,
        batch_decode: int | str | bool = "auto",
        item_shuffle_window: int | str | None = None,
        window_direct_io: bool = False,
    ) -> None:
        if shuffle_window is not None and not is_positive_int(shuffle_window):
            raise LitStreamingValueError(
                f"`shuffle_window` must be a positive int (chunks) or None, got {shuffle_window!r}"
            )
        compat.check_unsupported(serializers, encryption, window_direct_io)
        compat.check_tuning(num_canonical_nodes, batch_decode, item_shuffle_window, force_override_state_dict)
        super().__init__()
        self.input_dir = os.fspath(input_dir)
        self.cache_dir = cache_dir
        self.shuffle = bool(shuffle)
        self.drop_last = drop_last
        self.seed = int(seed)
        self.max_cache_size = compat.cache_budget(max_cache_size, cache_dir)
        self.subsample = float(subsample)
        self.storage_options = compat.merge_session_options(storage_options, session_options)
        self.session_options = session_options
        self.max_pre_download = max_pre_download
        self.index_path = index_path
        self.force_override_state_dict = bool(force_override_state_dict)
        self.num_canonical_nodes = num_canonical_nodes
        self.batch_decode = batch_decode
        self.item_shuffle_window = item_shuffle_window
        if transform is not None:
            # An instance attribute only when given: otherwise a subclass's ``transform`` method is what runs.
            self.transform = compat.transform_list(transform)
        self.allow_pickle = allow_pickle

        self._source = open_source(
            self.input_dir,
            cache_dir,
            self.storage_options,
            self.max_cache_size,
            compat.storage_settings(max_pre_download, storage_settings),
        )
        if index_path is not None:
            self._source = compat.IndexOverride(self._source, index_path, self.storage_options)
        with _collector_paused():
            self._format = open_dataset(self._source, format, item_loader, allow_pickle)
        self._index = self._format.index
        self.item_loader = self._format.reader
        self.chunk_lengths = self._format.chunk_lengths
        self._chunk_offsets = np.concatenate([[0], np.cumsum(self.chunk_lengths)])
        self.num_samples = int(self._chunk_offsets[-1])
        self._epoch_samples = sampling.subsample_count(self.num_samples, self.subsample)
        # The samples this dataset holds, as pieces (storage chunk, first item, end item) in its own order; None
        # for the whole dataset. ``subset``/``train_test_split`` set it (see splits.py): O(pieces), not O(samples).
        self._pieces: np.ndarray | None = None
        self._piece_offsets = self._chunk_offsets
        self.shuffle_window = shuffle_window if shuffle_window is not None else self._default_window()
        self._chunks = OpenChunks(self._source, self._format, capacity=self.shuffle_window + _OPEN_SLACK)
        self._recorder: profiling.TraceRecorder | None = None
        self._geometry: sampling.ChunkGeometry | None = None
        self._window: int | None = None  # the shuffle window the cache budget allows (fit_window)
        self._window_warned: tuple[int, int] | None = None

    # ---- random access -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Samples in one epoch of the whole dataset (after ``subsample``)."""
        return self._epoch_samples

    #: LitData's attribute: None, or the list of callables given as ``transform=``. A subclass may define a
    #: ``transform(self, sample)`` method instead; it runs on every sample, as in LitData.
    transform: Any = None

    def __getitem__(self, index: int | slice) -> Any:
        """Sample ``index`` (0 <= index < num_samples) with the transforms applied; iteration reads through this
        too. A slice gives a list of samples (``ds[a:b]``, ``ds[:]``), as LitData does, each transformed."""
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.num_samples))]
        if isinstance(index, str):
            raise LitStreamingTypeError(
                f"{type(self).__name__} indices are ints or slices, got the key {index!r}"
            )
        return self.apply_transform(self.read_sample(operator.index(index)))

    def apply_transform(self, sample: Any) -> Any:
        """``transform`` applied to ``sample``: each callable of the list in order, or the subclass's method."""
        transform = self.transform
        if transform is None:
            return sample
        if isinstance(transform, list):
            for fn in transform:
                sample = fn(sample)
            return sample
        return transform(sample)

    def read_sample(self, index: int) -> Any:
        """Sample ``index`` as stored (no transform)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(
                f"Index {index} out of range for dataset {self.input_dir} of {self.num_samples} samples"
            )
        chunk, local = self._locate(index)
        k, item = int(chunk), int(local)
        recorder = self._recorder
        if recorder is None:
            return self.item_loader.load(self._chunks.get(k), item)
        t0 = profiling.now_us()
        view = self._chunks.get(k)
        t1 = profiling.now_us()
        sample = self.item_loader.load(view, item)
        t2 = profiling.now_us()
        recorder.span("fetch", "io", t0, t1, chunk=k)
        recorder.span("decode", "decode", t1, t2, sample=index)
        recorder.span("sample", "worker", t0, t2, sample=index)
        return sample

    def _default_window(self) -> int:
        """``shuffle_window=None``: see the constructor's docs and ``LOCAL_SHUFFLE_WINDOW``."""
        if not self._source.reads_in_place:
            return sampling.DEFAULT_SHUFFLE_WINDOW
        per_chunk = self.num_samples / max(1, len(self.chunk_lengths))
        fits = int(_LOCAL_WINDOW_IDS // max(1.0, per_chunk))
        return max(sampling.DEFAULT_SHUFFLE_WINDOW, min(LOCAL_SHUFFLE_WINDOW, fits))

    def _locate(self, indices: Any) -> tuple[Any, Any]:
        """Storage chunk and item within it of dataset index(es) ``indices`` (an int or an int64 array), through
        the subset's pieces when there are any."""
        p = np.searchsorted(self._piece_offsets, indices, side="right") - 1
        if self._pieces is None:
            return p, indices - self._piece_offsets[p]
        return self._pieces[p, 0], self._pieces[p, 1] + indices - self._piece_offsets[p]

    def read_batch(self, indices: np.ndarray) -> Any:
        """Samples ``indices`` read as one batch by the item loader (``ItemLoader.load_batch``), without
        transforms: what ``batch_reader`` serves."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and not (int(indices.min()) >= 0 and int(indices.max()) < self.num_samples):
            raise IndexError(
                f"Indices {indices.tolist()} out of range for dataset {self.input_dir} of {self.num_samples} samples"
            )
        chunks, items = self._locate(indices)
        views = [self._chunks.get(k) for k in chunks.tolist()]
        return self.item_loader.load_batch(views, items.tolist())

    def batch_reader(self) -> Callable[[np.ndarray], Any] | None:
        # Only where a batch is exactly the default collate of the samples: no transform, no profiling spans,
        # and neither ``__getitem__`` nor ``read_sample`` replaced by a subclass.
        plain = (
            self.transform is None
            and self._recorder is None
            and type(self).__getitem__ is StreamingDataset.__getitem__
            and type(self).read_sample is StreamingDataset.read_sample
        )
        return self.read_batch if plain and self.item_loader.reads_batches else None

    def set_recorder(self, recorder: profiling.TraceRecorder | None) -> None:
        """Record fetch/decode spans into ``recorder`` (``None`` stops recording)."""
        self._recorder = recorder

    # ---- read-only debug hooks (what storage and format resolution chose; for tools and tests) -------------
    @property
    def cache_path(self) -> str | None:
        """This dataset version's folder in the local cache; None for a local folder (read in place)."""
        return getattr(self._source, "cache_path", None)

    @property
    def format_name(self) -> str:
        """The on-disk format the dataset was opened as: ``"litdata"``, ``"mds"``, ``"wds"`` or ``"parquet"``."""
        return self._format.format_name

    @property
    def storage_settings(self) -> StorageSettings | None:
        """The settings remote reads use (``max_pre_download`` applied); None for a local folder."""
        return getattr(self._source, "settings", None)

    # ---- the Stream protocol -------------------------------------------------------------------------------
    def leaves(self) -> list[StreamingDataset]:
        return [self]

    def drop_last_for(self, world_size: int) -> bool:
        return self.drop_last if self.drop_last is not None else world_size > 1

    @property
    def geometry(self) -> sampling.ChunkGeometry:
        """Items and epoch ids per chunk (the subsample draw, made once per process). A subset's plan is over
        its pieces: plan keys are the subset's own indices, so iteration and ``ds[i]`` agree."""
        if self._geometry is None:
            lengths = self.chunk_lengths if self._pieces is None else np.diff(self._piece_offsets)
            self._geometry = sampling.dataset_geometry(lengths, self.subsample, self.seed)
        return self._geometry

    def subset(self, indices: Sequence[int] | slice) -> StreamingDataset:
        """A copy holding only samples ``indices`` of this dataset (in that order), as LitData's ``subset``.

        The copy streams, shuffles, shards and resumes on its own; ``ds.subset(...)[j]`` is ``ds[indices[j]]``.
        Runs of consecutive indices are stored as one piece each, so a slice costs O(chunks) whatever its size.
        """
        from lit_streaming import splits

        return self.with_pieces(splits.pieces_of(self.pieces(), indices))

    def pieces(self) -> np.ndarray:
        """This dataset's samples as (storage chunk, first item, end item) rows, in its index order."""
        if self._pieces is not None:
            return self._pieces
        lengths = np.asarray(self.chunk_lengths, dtype=np.int64)
        return np.stack([np.arange(lengths.size, dtype=np.int64), np.zeros_like(lengths), lengths], axis=1)

    def with_pieces(self, pieces: np.ndarray) -> StreamingDataset:
        """A copy of this dataset restricted to ``pieces`` (see :meth:`pieces`); its own iteration state."""
        clone = copy.copy(self)
        clone._fresh_state()
        clone._chunks = copy.copy(self._chunks)
        clone._recorder = None
        clone._geometry = None
        clone._window = None
        clone._pieces = np.asarray(pieces, dtype=np.int64).reshape(-1, 3)
        clone._piece_offsets = sampling.chunk_offsets(clone._pieces[:, 2] - clone._pieces[:, 1])
        clone.num_samples = int(clone._piece_offsets[-1])
        clone._epoch_samples = sampling.subsample_count(clone.num_samples, clone.subsample)
        return clone

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
        self._chunks.capacity = window if budget is not None else window + _OPEN_SLACK
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
            # only for a subset/split, so the states of whole datasets stay as they were
            **({} if self._pieces is None else {"subset": self.pieces_fingerprint()}),
        }

    def pieces_fingerprint(self) -> str:
        """A digest of a subset's pieces: another split (or seed of ``train_test_split``) is another order."""
        return hashlib.sha256(np.ascontiguousarray(self.pieces(), dtype="<i8").tobytes()).hexdigest()[:16]

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
        """Tell the source which chunks will be read, in order, so remote ones download ahead (a subset's plan
        names its pieces: they are mapped to their storage chunks here)."""
        if self._pieces is not None:
            chunks = list(dict.fromkeys(self._pieces[np.asarray(chunks, dtype=np.int64), 0].tolist()))
        self._source.prefetch(chunks)

    def __repr__(self) -> str:
        subset = "" if self._pieces is None else ", subset"
        return f"{type(self).__name__}({self.input_dir!r}, samples={self.num_samples}, shuffle={self.shuffle}{subset})"
