"""One rank's part of an ``optimize`` job (its contiguous range of the inputs): ChunkWriter fills chunks in a
local folder, every finished chunk is published to the output at once, and the worker's checkpoint (its
partial index ``{rank}.index.json``) then lists it together with the position of the first sample not yet in a published chunk.

Chunks are cut only by ChunkWriter and a checkpoint is saved only right after a cut, so a resumed worker
starts a fresh chunk exactly where the interrupted one would have: the resumed dataset has the same chunks as
an uninterrupted run, not just the same samples.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lit_streaming.format.index import ChunkEntry, DatasetIndex
from lit_streaming_writer.checkpoint import Checkpointer
from lit_streaming_writer.errors import InputError
from lit_streaming_writer.output import Output
from lit_streaming_writer.writer import ChunkWriter


class RankWriter:
    """Writes, publishes and checkpoints one rank's chunks; ``position`` is where a resumed rank continues."""

    def __init__(
        self,
        out: Output,
        rank: int,
        settings: dict[str, Any],
        existing: DatasetIndex | None,
        first_chunk: int,
        checkpointer: Checkpointer,
        uploaders: int | None = None,
    ) -> None:
        self.out = out
        self.rank = rank
        self.checkpointer = checkpointer
        self.chunks: list[ChunkEntry] = []
        # Remote outputs: chunks upload on ``uploaders`` threads (LitData's num_uploaders, default 1) while the
        # worker writes the next ones; at most two per thread wait, so local disk stays bounded. Local outputs
        # publish by rename: nothing to overlap.
        self._uploads = max(1, uploaders or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[ChunkEntry, Future]] = deque()
        self.position: tuple[int, int] | None = None
        config = None
        resumed = checkpointer.load()
        if resumed is not None:
            doc, progress = resumed
            part = DatasetIndex.from_json(json.dumps(doc), out.path(checkpointer.name))
            self.chunks, config = part.chunks, part.config
            self.position = (int(progress["next_input"]), int(progress["next_sample"]))
        if config and config.get("data_format"):
            expected: DatasetIndex | None = DatasetIndex([], config)
        else:  # an empty dataset appended to (every input was skipped) has no structure yet
            expected = existing if existing is not None and existing.data_format else None
        self.local_dir, self._temporary = out.staging_dir("")
        self.writer = ChunkWriter(
            self.local_dir,
            rank=rank,
            chunk_size=settings["chunk_size"],
            chunk_bytes=settings["chunk_bytes"],
            compression=settings["compression"],
            tokens=settings["tokens"],
            first_chunk_index=first_chunk + len(self.chunks),
            expected=expected,
        )

    def add(self, sample: Any, where: str, position: tuple[int, int]) -> None:
        """Add the sample at ``position`` (input index, sample number within that input's samples)."""
        before = len(self.writer.chunks)
        try:
            self.writer.add(sample, where)
        except Exception as err:
            message = str(err) if str(err).startswith(where) else f"{where}: {type(err).__name__}: {err}"
            raise InputError(f"Cannot store a sample: {message}", position[0]) from err
        if len(self.writer.chunks) > before:  # the chunk before this sample was cut and written
            self._publish(before)
            if self.checkpointer.due():
                self._save(position)

    def close(self, end: int) -> DatasetIndex:
        """Write and publish the last chunk; the final checkpoint is the rank's part of the index."""
        before = len(self.writer.chunks)
        self.writer.flush()
        self._publish(before)
        self._save((end, 0))
        self._remove_stale_temp_files()
        return DatasetIndex(chunks=list(self.chunks), config=self.writer.config())

    def _remove_stale_temp_files(self) -> None:
        """Temp files of this rank's checkpoint writes that a killed earlier run left behind
        (``{rank}.index.json.tmp-<pid>``): the final checkpoint is published, so none of them is needed, and
        nothing else would ever delete them from the finished dataset."""
        stale = re.compile(rf"^{self.rank}\.index\.json\.tmp-\d+$")
        self.out.remove([name for name in self.out.names() if stale.match(name)])

    def cleanup(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._temporary:
            shutil.rmtree(self.local_dir, ignore_errors=True)

    def _publish(self, first_new: int) -> None:
        for entry in self.writer.chunks[first_new:]:
            local = os.path.join(self.local_dir, entry.filename)
            if self.out.is_local:
                self.out.publish(local, entry.filename)
                self.chunks.append(entry)
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._uploads, thread_name_prefix="lit-streaming-upload")
            self._pending.append((entry, self._pool.submit(self.out.publish, local, entry.filename)))
            while len(self._pending) > 2 * self._uploads:
                self._finish_oldest_upload()

    def _finish_oldest_upload(self) -> None:
        entry, future = self._pending.popleft()
        future.result()  # an upload's error is this worker's error
        self.chunks.append(entry)

    def _save(self, position: tuple[int, int]) -> None:
        while self._pending:  # a checkpoint lists only chunks that are in the output
            self._finish_oldest_upload()
        doc = {"chunks": [c.to_dict() for c in self.chunks], "config": self.writer.config()}
        self.checkpointer.save(doc, {"next_input": position[0], "next_sample": position[1]})
