"""WebDataset tars read in place: shards written by webdataset's own ShardWriter."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support.formats import wds_sample, write_wds
from support.product import ProductTests, upload

from lit_streaming import StreamingDataset
from lit_streaming.cli import main
from lit_streaming.format.serializers import PickleNotAllowedError
from lit_streaming.formats import wds
from lit_streaming.formats.base import CorruptShardError

N = 40


@pytest.fixture(scope="module")
def wds_dir(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("wds") / "ds")
    assert len(write_wds(out, N, maxcount=7)) == 6
    return out


class TestProduct(ProductTests):
    n, key = N, "cls"

    @pytest.fixture()
    def path(self, wds_dir):
        return wds_dir


def test_samples_equal_what_webdataset_decodes(wds_dir):
    import webdataset

    theirs = list(
        webdataset.WebDataset(f"{wds_dir}/shard-{{000000..000005}}.tar", shardshuffle=False).decode("rgb8")
    )
    ours = StreamingDataset(wds_dir)
    assert ours.format_name == "wds" and len(ours) == len(theirs) == N
    assert list(ours.chunk_lengths) == [7, 7, 7, 7, 7, 5]
    for i, t in enumerate(theirs):
        o = ours[i]
        assert set(o) == set(t) - {"__local_path__"}
        assert o["__key__"] == t["__key__"] and o["__url__"] == t["__url__"]
        assert o["cls"] == t["cls"] == i and o["txt"] == t["txt"] and o["json"] == t["json"]
        assert o["raw.bin"] == t["raw.bin"] == wds_sample(i)["raw.bin"]
        assert o["npy"].dtype == t["npy"].dtype and np.array_equal(o["npy"], t["npy"])
        for image in ("jpg", "seg.png"):  # our image leaves: uint8 RGB (3, H, W)
            assert o[image].dtype == torch.uint8
            assert np.array_equal(o[image].permute(1, 2, 0).numpy(), t[image])


def test_gzipped_shards(tmp_path, wds_dir):
    out = tmp_path / "gz"
    out.mkdir()
    for name in sorted(os.listdir(wds_dir)):
        (out / f"{name}.gz").write_bytes(gzip.compress(Path(wds_dir, name).read_bytes()))
    ds = StreamingDataset(str(out))
    assert ds.chunk_lengths.tolist() == [7, 7, 7, 7, 7, 5]
    plain = StreamingDataset(wds_dir)
    for i in (0, 8, N - 1):
        assert ds[i]["json"] == plain[i]["json"] and torch.equal(ds[i]["jpg"], plain[i]["jpg"])


def _copy(src: str, dst: Path) -> Path:
    dst.mkdir()
    for name in os.listdir(src):
        (dst / name).write_bytes(Path(src, name).read_bytes())
    return dst


def test_index_command_writes_the_index_readers_use(tmp_path, wds_dir, monkeypatch, capsys):
    folder = _copy(wds_dir, tmp_path / "indexed")
    assert main(["index", str(folder)]) == 0
    assert f"indexed {N} samples in 6 shards" in capsys.readouterr().out
    doc = json.loads((folder / wds.INDEX_NAME).read_text())
    assert sorted(doc["shards"]) == sorted(os.listdir(wds_dir))

    def no_scan(*args, **kwargs):
        raise AssertionError("a shard was scanned although wds-index.json lists it")

    monkeypatch.setattr(wds, "scan_file", no_scan)
    ds = StreamingDataset(str(folder))
    assert [s["cls"] for s in ds] == list(range(N))


def test_a_stale_index_entry_is_scanned_again(tmp_path, wds_dir):
    folder = _copy(wds_dir, tmp_path / "stale")
    assert main(["index", str(folder)]) == 0
    before = (folder / "shard-000005.tar").stat().st_size
    with tarfile.open(folder / "shard-000005.tar", "a") as tar:  # the shard grows after it was indexed
        for name, data in (("extra00099.cls", b"99"), ("extra00099.bin", b"x" * 30_000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert (folder / "shard-000005.tar").stat().st_size != before
    ds = StreamingDataset(str(folder))
    assert ds.chunk_lengths.tolist()[-1] == 6 and ds[N]["cls"] == 99


def test_a_shard_rewritten_at_the_same_size_is_caught_on_open(tmp_path, wds_dir):
    folder = _copy(wds_dir, tmp_path / "same")
    assert main(["index", str(folder)]) == 0
    path = folder / "shard-000001.tar"
    data = path.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:  # other header layout
        for member, payload in members[1:] + members[:1]:
            tar.addfile(member, io.BytesIO(payload))
    rewritten = buf.getvalue()[: len(data)].ljust(len(data), b"\0")
    path.write_bytes(rewritten)
    ds = StreamingDataset(str(folder))
    with pytest.raises(CorruptShardError, match=r"shard-000001.tar .*does not match its member index"):
        ds[7]


def test_remote_shards_are_scanned_once_and_the_index_kept_with_the_cache(
    tmp_path, wds_dir, memory_url, monkeypatch
):
    upload(wds_dir, memory_url)
    cache = str(tmp_path / "cache")
    ds = StreamingDataset(memory_url, cache_dir=cache, max_cache_size="600KB", shuffle_window=1)
    (kept,) = Path(ds.cache_path).rglob(wds.INDEX_NAME)  # the member index, inside this version's cache entry
    assert kept.is_file()
    assert [s["cls"] for s in ds] == list(range(N))
    monkeypatch.setattr(wds, "scan_file", lambda *a: pytest.fail("scanned again"))
    again = StreamingDataset(memory_url, cache_dir=cache)
    assert again[N - 1]["cls"] == N - 1


def test_pickled_members_need_allow_pickle(tmp_path):
    out = str(tmp_path / "pyd")
    write_wds(out, 4, make=lambda i: {"__key__": f"k{i}", "cls": i, "pyd": {"x": {i}}})
    with pytest.raises(PickleNotAllowedError, match=r"shard-000000.tar holds .pyd members"):
        StreamingDataset(out)
    assert StreamingDataset(out, allow_pickle=True)[2]["pyd"] == {"x": {2}}


def test_a_truncated_tar_names_the_shard(tmp_path, wds_dir):
    folder = _copy(wds_dir, tmp_path / "trunc")
    data = (folder / "shard-000002.tar").read_bytes()
    (folder / "shard-000002.tar").write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(CorruptShardError, match=r"shard-000002.tar .*runs past the end"):
        StreamingDataset(str(folder))


def test_not_a_tar_is_refused_naming_it(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"hello" * 200)
    with pytest.raises(CorruptShardError, match=r"x.tar .*bad header checksum"):
        StreamingDataset(str(tmp_path))


def test_inspect_shows_the_format(wds_dir, capsys):
    assert main(["inspect", wds_dir]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "wds" and summary["items"] == N and summary["shards"] == 6
    assert summary["extensions"] == ["cls", "jpg", "json", "npy", "raw.bin", "seg.png", "txt"]


def test_index_command_on_a_remote_url(tmp_path, wds_dir, memory_url, monkeypatch):
    upload(wds_dir, memory_url)
    assert main(["index", memory_url]) == 0
    monkeypatch.setattr(wds, "scan_file", lambda *a: pytest.fail("scanned although wds-index.json is there"))
    ds = StreamingDataset(memory_url, cache_dir=str(tmp_path / "cache"))
    assert [s["cls"] for s in ds] == list(range(N))


def test_a_forged_index_entry_is_refused(tmp_path, wds_dir):
    folder = _copy(wds_dir, tmp_path / "forged")
    assert main(["index", str(folder)]) == 0
    doc = json.loads((folder / wds.INDEX_NAME).read_text())
    doc["shards"]["shard-000003.tar"]["sizes"][2] = 10**12  # a member far past the end of the tar
    (folder / wds.INDEX_NAME).write_text(json.dumps(doc))
    with pytest.raises(CorruptShardError, match=r"shard shard-000003.tar: tar index entry is inconsistent"):
        StreamingDataset(str(folder))


def test_verify_reads_every_sample(wds_dir, capsys):
    assert main(["verify", wds_dir]) == 0
    assert f"{N} samples in 6 chunks" in capsys.readouterr().out
