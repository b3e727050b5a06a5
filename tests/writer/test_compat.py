"""LitData's optimize/map arguments, used as LitData's README and docs use them (litdata 0.2.76 is the reference:
the signature tests compare against the installed package)."""

from __future__ import annotations

import inspect
import json
import multiprocessing
import os
from pathlib import Path

import fsspec
import pytest
from support.writer import read_samples, sample

from lit_streaming_writer import map, merge_datasets, optimize, walk
from lit_streaming_writer.inputs import Split


def _chunk_sizes(path: str | Path) -> list[int]:
    return [c["chunk_size"] for c in json.loads((Path(path) / "index.json").read_text())["chunks"]]


# ---- the signatures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["optimize", "map"])
def test_every_litdata_argument_is_accepted_in_litdata_order(name):
    from litdata.processing import functions

    theirs = inspect.signature(getattr(functions, name)).parameters
    ours = inspect.signature({"optimize": optimize, "map": map}[name]).parameters
    positional = [p for p in ours.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert [p.name for p in positional] == list(theirs), "same names, same positions"
    for p in theirs.values():
        if p.default is not inspect.Parameter.empty and p.name != "storage_options":  # {} -> None here
            assert ours[p.name].default == p.default, p.name


def test_lit_streaming_re_exports_the_writer():
    import lit_streaming
    import lit_streaming_writer

    for name in ("optimize", "map", "merge_datasets", "walk"):
        assert getattr(lit_streaming, name) is getattr(lit_streaming_writer, name)
    from lit_streaming import map as lit_map
    from lit_streaming import optimize as lit_optimize

    assert lit_map is map and lit_optimize is optimize


# ---- inputs: batch_size, fast_dev_run, weights, align_chunking, reader ------------------------------------------


def _ids(batch: list[int]) -> dict:
    return {"ids": list(batch), "n": len(batch)}


def test_batch_size_groups_inputs(tmp_path):
    optimize(_ids, list(range(7)), str(tmp_path), chunk_size=2, batch_size=3, num_workers=2, verbose=False)
    assert [s["ids"] for s in read_samples(tmp_path)] == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize(("value", "count"), [(True, 10), (3, 3), (False, 25)])
def test_fast_dev_run_keeps_the_first_inputs(tmp_path, value, count):
    optimize(sample, list(range(25)), str(tmp_path), chunk_size=4, fast_dev_run=value, num_workers=1)
    assert [s["id"] for s in read_samples(tmp_path)] == list(range(count))


def test_weights_balance_contiguous_shares_and_keep_the_order(tmp_path):
    weights = [10] + [1] * 10  # the first input weighs as much as the ten others
    assert Split(11, weights).bounds(2) == [(0, 1), (1, 11)]
    optimize(sample, list(range(11)), str(tmp_path), chunk_size=4, weights=weights, num_workers=2)
    assert [s["id"] for s in read_samples(tmp_path)] == list(range(11))
    assert _chunk_sizes(tmp_path) == [1, 4, 4, 2]  # worker 0 wrote input 0 alone
    with pytest.raises(ValueError, match="weights"):
        optimize(sample, list(range(3)), str(tmp_path / "x"), chunk_size=4, weights=[1, 2])


def test_align_chunking_gives_one_workers_chunks(tmp_path):
    optimize(sample, list(range(10)), str(tmp_path / "plain"), chunk_size=4, num_workers=2)
    assert _chunk_sizes(tmp_path / "plain") == [4, 1, 4, 1]
    optimize(sample, list(range(10)), str(tmp_path / "a"), chunk_size=4, num_workers=2, align_chunking=True)
    assert _chunk_sizes(tmp_path / "a") == [4, 4, 2]
    assert [s["id"] for s in read_samples(tmp_path / "a")] == list(range(10))
    with pytest.raises(ValueError, match="align_chunking"):
        optimize(sample, list(range(10)), str(tmp_path / "b"), chunk_bytes="1MB", align_chunking=True)


class _RowsReader:
    """A LitData-style reader: remaps each file into (file, row) items and reads one row per item."""

    def remap_items(self, items: list, num_workers: int) -> list:
        return [(f, r) for f in items for r in range(2)]

    def read(self, item: tuple) -> dict:
        return {"file": item[0], "row": item[1]}


def _row(row: dict) -> dict:
    return row


def test_reader_remaps_and_reads_the_inputs(tmp_path):
    optimize(_row, ["a", "b"], str(tmp_path), chunk_size=2, reader=_RowsReader(), num_workers=2)
    assert read_samples(tmp_path) == [{"file": f, "row": r} for f in "ab" for r in range(2)]


def test_reorder_files_balances_by_the_sizes_under_a_local_input_dir(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    for i, size in enumerate([9000, 10, 10, 10, 10, 10]):
        (files / f"{i}.bin").write_bytes(b"x" * size)
    paths = [str(files / f"{i}.bin") for i in range(6)]
    out = tmp_path / "out"
    optimize(os.path.getsize, paths, str(out), chunk_size=8, input_dir=str(files), num_workers=2)
    assert _chunk_sizes(out) == [1, 5]  # the big file alone on one worker
    assert read_samples(out) == [9000, 10, 10, 10, 10, 10]  # order kept
    optimize(os.path.getsize, paths, str(out), chunk_size=8, input_dir=str(files), num_workers=2,
             reorder_files=False, mode="overwrite")  # fmt: skip
    assert _chunk_sizes(out) == [3, 3]


# ---- remote input_dir: files downloaded for fn, num_downloaders threads ----------------------------------------


def _read_local_file(path: str) -> dict:
    assert "://" not in path and os.path.isfile(path), path
    with open(path, "rb") as f:
        return {"name": os.path.basename(path), "data": f.read(), "local": path}


def test_remote_input_files_are_downloaded_before_fn(tmp_path):
    fs = fsspec.filesystem("memory")
    for i in range(5):
        fs.pipe_file(f"/inputs/sub/{i}.txt", f"file {i}".encode())
    inputs = [f"memory://inputs/sub/{i}.txt" for i in range(5)]
    optimize(_read_local_file, inputs, str(tmp_path), chunk_size=2, num_workers=1, num_downloaders=3)
    got = read_samples(tmp_path)
    assert [(s["name"], s["data"]) for s in got] == [(f"{i}.txt", f"file {i}".encode()) for i in range(5)]
    assert not any(os.path.exists(s["local"]) for s in got), "downloaded files are deleted after use"


def test_missing_remote_input_names_the_file(tmp_path):
    from lit_streaming_writer import WorkerError

    with pytest.raises(WorkerError, match="Cannot download memory://nowhere/x.txt"):
        optimize(_read_local_file, ["memory://nowhere/x.txt"], str(tmp_path), chunk_size=2, num_workers=1)


# ---- queue ------------------------------------------------------------------------------------------------------


def test_queue_feeds_the_workers_until_none(tmp_path):
    queue = multiprocessing.get_context("fork").Queue()
    for i in range(20):
        queue.put(i)
    queue.put(None)
    optimize(sample, queue=queue, output_dir=str(tmp_path), chunk_size=4, num_workers=2, verbose=False)
    assert sorted(s["id"] for s in read_samples(tmp_path)) == list(range(20))


def test_queue_arguments_are_checked(tmp_path):
    import queue as threads_queue

    with pytest.raises(ValueError, match="not both"):
        optimize(sample, [1], str(tmp_path), queue=multiprocessing.Queue(), chunk_size=1)
    with pytest.raises(ValueError, match="multiprocessing.Queue"):
        optimize(sample, queue=threads_queue.Queue(), output_dir=str(tmp_path), chunk_size=1)
    with pytest.raises(ValueError, match="inputs"):
        optimize(sample, output_dir=str(tmp_path), chunk_size=1)


# ---- start methods, verbose, arguments with no effect, refused ones ---------------------------------------------


def test_spawned_workers(tmp_path):
    optimize(sample, list(range(6)), str(tmp_path), chunk_size=2, num_workers=2, start_method="spawn")
    assert [s["id"] for s in read_samples(tmp_path)] == list(range(6))


def test_verbose_false_prints_no_progress(tmp_path, capfd):
    optimize(sample, list(range(4)), str(tmp_path / "quiet"), chunk_size=2, num_workers=1, verbose=False)
    assert "optimize" not in capfd.readouterr().err
    optimize(sample, list(range(4)), str(tmp_path / "loud"), chunk_size=2, num_workers=1)
    assert "optimize" in capfd.readouterr().err


def test_arguments_that_tune_litdata_machinery_are_accepted(tmp_path):
    optimize(
        sample,
        list(range(6)),
        str(tmp_path),
        chunk_size=2,
        num_workers=0,  # LitData: one worker
        num_uploaders=2,
        num_downloaders=2,
        optimize_dns=True,
        keep_data_ordered=False,
        use_checkpoint=True,
        broadcast_paths=True,
        compression="zstd",
        compression_level="chunk",
        compression_batch_size=64,
        reorder_files=False,
    )
    assert [s["id"] for s in read_samples(tmp_path)] == list(range(6))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encryption": object()}, "encryption"),
        ({"key_fn": str}, "key_fn"),
        ({"machine": "A10G"}, "machine"),
        ({"compression": "zstd", "compression_level": "batch"}, "compression_level"),
        ({"start_method": "popen"}, "start_method"),
        ({"num_downloaders": 0}, "num_downloaders"),
        ({"batch_size": 0}, "batch_size"),
        ({"fast_dev_run": -1}, "fast_dev_run"),
    ],
)
def test_arguments_that_cannot_be_honoured_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimize(sample, list(range(3)), str(tmp_path), chunk_size=1, **kwargs)
    assert not (tmp_path / "index.json").exists()


# ---- map: is_last, device, LitData's arguments -------------------------------------------------------------------


def _write_with_flags(i: int, output_dir: str, is_last: bool, device: str | None) -> None:
    Path(output_dir, f"{i}.json").write_text(json.dumps({"is_last": is_last, "device": device}))


def test_map_passes_is_last_and_device(tmp_path):
    map(_write_with_flags, list(range(7)), str(tmp_path), num_workers=2)
    flags = {i: json.loads((tmp_path / f"{i}.json").read_text()) for i in range(7)}
    assert [i for i, f in flags.items() if f["is_last"]] == [3, 6]  # the last input of each worker's share
    import torch

    assert {f["device"] for f in flags.values()} == ({None} if not torch.cuda.is_available() else {"cuda:0"})


def _write_batch(batch: list[int], output_dir: str) -> None:
    Path(output_dir, f"{batch[0]}-{batch[-1]}.txt").write_text(",".join(map_str(batch)))


def map_str(values: list[int]) -> list[str]:
    return [str(v) for v in values]


def test_map_takes_litdata_arguments(tmp_path):
    map(
        _write_batch,
        list(range(10)),
        str(tmp_path),
        batch_size=4,
        fast_dev_run=2,
        num_workers=2,
        num_downloaders=2,
        num_uploaders=1,
        reorder_files=False,
        keep_data_ordered=True,
        optimize_dns=False,
        start_method="fork",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0-3.txt", "4-7.txt"]


def _returns_something(i: int, output_dir: str) -> int:
    return i


def test_map_fn_must_not_return_samples(tmp_path):
    from lit_streaming_writer import WorkerError

    with pytest.raises(WorkerError, match="return None"):
        map(_returns_something, [1, 2], str(tmp_path), num_workers=1)


# ---- merge_datasets and walk --------------------------------------------------------------------------------------


def test_merge_datasets_concatenates_and_litdata_reads_the_result(tmp_path):
    import litdata

    optimize(sample, list(range(5)), str(tmp_path / "a"), chunk_size=2, num_workers=2)
    optimize(sample, list(range(5, 9)), str(tmp_path / "b"), chunk_size=3, num_workers=1)
    merge_datasets([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "m"))
    expected = [sample(i) for i in range(9)]
    assert read_samples(tmp_path / "m") == expected
    theirs = litdata.StreamingDataset(str(tmp_path / "m"))
    assert [theirs[i] for i in range(len(theirs))] == expected
    names = [c["filename"] for c in json.loads((tmp_path / "m" / "index.json").read_text())["chunks"]]
    assert names == [f"chunk-0-{k}.bin" for k in range(len(names))]
    with pytest.raises(ValueError, match="already holds a dataset"):
        merge_datasets([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "m"))


def _other(i: int) -> dict:
    return {"id": str(i)}


def test_merge_refuses_datasets_that_decode_differently(tmp_path):
    optimize(sample, list(range(3)), str(tmp_path / "a"), chunk_size=2, num_workers=1)
    optimize(_other, list(range(3)), str(tmp_path / "b"), chunk_size=2, num_workers=1)
    with pytest.raises(ValueError, match="data_format"):
        merge_datasets([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "m"))
    with pytest.raises(ValueError, match="no index.json"):
        merge_datasets([str(tmp_path / "a"), str(tmp_path / "none")], str(tmp_path / "m"))
    assert not (tmp_path / "m" / "index.json").exists()


def test_walk_lists_what_os_walk_lists(tmp_path):
    for folder in ("a/b/c", "a/d", "e"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "f.txt").write_text("x")
    (tmp_path / "top.txt").write_text("x")
    ours = {(f, tuple(d), tuple(n)) for f, d, n in walk(str(tmp_path), max_workers=3)}
    theirs = {(f, tuple(sorted(d)), tuple(sorted(n))) for f, d, n in os.walk(tmp_path)}
    assert ours == theirs


def test_num_uploaders_upload_remote_chunks_on_threads_same_dataset(tmp_path):
    """Remote outputs: uploads overlap writing on ``num_uploaders`` threads; the dataset is byte-identical."""
    from support.writer import chunk_files

    optimize(sample, list(range(40)), str(tmp_path / "local"), chunk_size=3, num_workers=1)
    url = "memory://uploads/d"
    optimize(sample, list(range(40)), url, chunk_size=3, num_workers=1, num_uploaders=3)
    fs = fsspec.filesystem("memory")
    remote = json.loads(fs.cat_file("/uploads/d/index.json"))
    local = json.loads((tmp_path / "local" / "index.json").read_text())
    assert remote["chunks"] == local["chunks"]
    assert {
        c["filename"]: fs.cat_file(f"/uploads/d/{c['filename']}") for c in remote["chunks"]
    } == chunk_files(tmp_path / "local")
    assert sorted(fs.ls("/uploads/d", detail=False)) == sorted(
        ["/uploads/d/index.json"] + [f"/uploads/d/{c['filename']}" for c in remote["chunks"]]
    )
