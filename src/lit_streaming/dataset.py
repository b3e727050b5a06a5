"""StreamingDataset: random access (``ds[i]``) and iteration over an optimized dataset.

The order of iteration is not decided here: ``lit_streaming.sampling`` computes it from integers and seeds.
This class only asks "who am I?" (rank, worker, epoch, resume point) when iteration starts, and reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from lit_streaming import profiling, sampling
from lit_streaming.chunks import OpenChunks
from lit_streaming.format.units import parse_size
from lit_streaming.item_loaders import ItemLoader, loader_for
from lit_streaming.iteration import IterationControl
from lit_streaming.storage import open_source


class StreamingDataset(IterableDataset):
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
    ) -> None:
        if not isinstance(shuffle_window, int) or shuffle_window < 1:
            raise ValueError(f"`shuffle_window` must be a positive int (chunks), got {shuffle_window!r}")
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
        self._index = self._source.read_index()
        self.item_loader = loader_for(self._index, item_loader, self._source.url)
        self.item_loader.setup(self._index, self._source.url, allow_pickle)
        self.chunk_lengths = np.array(
            [self.item_loader.chunk_length(c) for c in self._index.chunks], np.int64
        )
        self._chunk_offsets = np.concatenate([[0], np.cumsum(self.chunk_lengths)])
        self.num_samples = int(self._chunk_offsets[-1])
        self._epoch_samples = sampling.subsample_count(self.num_samples, self.subsample)
        self._chunks = OpenChunks(self._source, self._index, capacity=shuffle_window + 4)
        self._resume_chain: tuple[tuple[int, int], ...] = ()
        self._control = IterationControl()
        self._profile: tuple[str, int] | None = None
        self._recorder: profiling.TraceRecorder | None = None

    # ---- random access -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Samples in one epoch of the whole dataset (after ``subsample``)."""
        return self._epoch_samples

    def __getitem__(self, index: int) -> Any:
        """Sample ``index`` of the stored dataset (0 <= index < num_samples), transformed."""
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
        recorder.span("fetch", "io", t0, t1, chunk=k)
        recorder.span("decode", "decode", t1, profiling.now_us(), sample=index)
        return sample

    # ---- iteration -----------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """The epoch that plain iteration (without StreamingDataLoader) uses for shuffling."""
        self._control.epoch = int(epoch)

    def resolved_drop_last(self, world_size: int) -> bool:
        return self.drop_last if self.drop_last is not None else world_size > 1

    def _plan_kwargs(self, world_size: int, batch_size: int) -> dict[str, Any]:
        return dict(
            seed=self.seed,
            shuffle=self.shuffle,
            drop_last=self.resolved_drop_last(world_size),
            world_size=world_size,
            batch_size=batch_size,
            subsample=self.subsample,
            shuffle_window=self.shuffle_window,
            resume_chain=self._resume_chain,
        )

    def rank_sequence(self, epoch: int, world_size: int, rank: int, batch_size: int) -> np.ndarray:
        """Every sample id this rank yields in ``epoch``, in order (a pure function of the settings)."""
        return sampling.rank_sequence(
            self.chunk_lengths, epoch=epoch, rank=rank, **self._plan_kwargs(world_size, batch_size)
        )

    def epoch_length(self, world_size: int, batch_size: int) -> int:
        """Samples each rank yields in an epoch (equal on every rank)."""
        return sampling.rank_sequence_length(self.chunk_lengths, **self._plan_kwargs(world_size, batch_size))

    def configure_iteration(
        self, epoch: int, start: int, batch_size: int, world_size: int, rank: int, num_workers: int
    ) -> None:
        self._control.configure(epoch, start, batch_size, world_size, rank, num_workers)

    @property
    def resume_chain(self) -> tuple[tuple[int, int], ...]:
        """Elastic resume segments (world_size, consumed) that shape the current epoch's remainder."""
        return self._resume_chain

    def set_resume_chain(self, chain: tuple[tuple[int, int], ...]) -> None:
        self._resume_chain = tuple((int(w), int(c)) for w, c in chain)

    def order_settings(self) -> dict[str, Any]:
        """Every setting that changes which samples come in which order (checked on resume)."""
        return {
            "type": type(self).__name__,
            "num_samples": self.num_samples,
            "num_chunks": len(self.chunk_lengths),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "subsample": self.subsample,
            "shuffle_window": self.shuffle_window,
            **self.item_loader.settings(),
        }

    def enable_profiling(self, profile_dir: str | None, batches: int) -> None:
        """Record fetch/decode spans for the first ``batches`` batches of each epoch (see profiling.py)."""
        self._profile = (profile_dir, batches) if profile_dir and batches > 0 else None

    def __iter__(self) -> Iterator[Any]:
        ctx = self._control.current()
        seq = self.rank_sequence(ctx.epoch, ctx.world_size, ctx.rank, ctx.batch_size)
        ids = sampling.worker_ids(seq, ctx.start, ctx.batch_size, ctx.num_workers, ctx.worker_id)
        self.prefetch(ids)
        if self._profile is None:
            for i in ids.tolist():
                yield self[i]
            return
        yield from self._profiled(ids, ctx)

    def _profiled(self, ids: np.ndarray, ctx: Any) -> Iterator[Any]:
        profile_dir, batches = self._profile  # type: ignore[misc]
        mine = len(range(ctx.worker_id, batches, ctx.num_workers))
        traced = min(len(ids), mine * ctx.batch_size)
        self._recorder = profiling.TraceRecorder(f"rank {ctx.rank} worker {ctx.worker_id}")
        path = profiling.worker_trace_path(profile_dir, ctx.epoch, ctx.rank, ctx.worker_id)
        try:
            for n, i in enumerate(ids.tolist()):
                start = profiling.now_us()
                sample = self[i]
                if self._recorder is not None:
                    self._recorder.span("sample", "worker", start, profiling.now_us(), sample=i)
                    if n == traced - 1:  # written before the last traced sample leaves, so the merge finds it
                        self._recorder.dump(path)
                        self._recorder = None
                yield sample
        finally:
            self._recorder = None

    def prefetch(self, ids: np.ndarray) -> None:
        """Tell the source which chunks reading ``ids`` will need, in order, so remote ones download ahead."""
        self._source.prefetch(self.chunk_order(ids))

    def chunk_order(self, ids: np.ndarray) -> list[int]:
        """The chunks that reading ``ids`` in order touches, in first-use order (for prefetching)."""
        if len(ids) == 0:
            return []
        chunks = np.searchsorted(self._chunk_offsets, ids, side="right") - 1
        first = np.concatenate([[True], chunks[1:] != chunks[:-1]])
        runs = chunks[first]
        _, where = np.unique(runs, return_index=True)
        return runs[np.sort(where)].tolist()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.input_dir!r}, samples={self.num_samples}, shuffle={self.shuffle})"
        )
