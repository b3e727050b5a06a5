"""Verified-chunk flags shared with forked workers: a later epoch's workers do not hash the same chunks again."""

from __future__ import annotations

import multiprocessing
import pickle

from support.storage import flip_byte, write_dataset

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming.storage import ChunkIntegrityError
from lit_streaming.storage.shared_flags import SharedFlags


def _set(flags: SharedFlags, index: int) -> None:
    flags.add(index)


def test_a_flag_set_in_a_forked_child_is_seen_by_the_parent():
    flags = SharedFlags(10)
    child = multiprocessing.get_context("fork").Process(target=_set, args=(flags, 3))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert 3 in flags and 2 not in flags
    assert -1 not in flags and 10 not in flags  # out of range is never set, and never raises
    flags.add(10)


def test_a_pickled_copy_starts_clear():
    flags = SharedFlags(4)
    flags.add(1)
    copy = pickle.loads(pickle.dumps(flags))
    assert 1 not in copy and copy.length == 4
    assert 1 not in SharedFlags(0) and 0 not in SharedFlags(0)


def test_chunks_checked_by_one_epochs_workers_are_not_checked_again(tmp_path):
    folder = write_dataset(tmp_path / "ds", n=40, chunk_size=4, size=100)
    dataset = StreamingDataset(str(folder), shuffle=True)
    loader = StreamingDataLoader(dataset, batch_size=4, num_workers=2)
    assert len([s for batch in loader for s in batch["i"]]) == 40
    # Damage a chunk after the first epoch: the flags say it was checked, so the next epoch's (new) workers
    # read it without hashing it again; a new dataset object (another job) checks it and refuses it.
    chunk = sorted(p for p in folder.iterdir() if p.suffix == ".bin")[0]
    flip_byte(chunk)
    assert len([s for batch in loader for s in batch["i"]]) == 40
    fresh = StreamingDataLoader(StreamingDataset(str(folder)), batch_size=4, num_workers=2)
    try:
        list(fresh)
    except ChunkIntegrityError as err:
        assert chunk.name in str(err)
    else:
        raise AssertionError("the damaged chunk was served to a new reader")
