"""Smoke test of the benchmark harness: ``python -m bench.run --small`` end to end (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = {
    "P1": "P1 stream local images",
    "P2": "P2 stream tokens",
    "P3 images": "P3 optimize images",
    "P3 tokens": "P3 optimize tokens",
    "P4": "P4 stream images from S3",
    "P5": "P5 batch diversity",
    "P6": "P6 peak memory",
}
PEERS = ("LitData", "MosaicML", "WebDataset")


def _run_bench(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` from the repository root; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.timeout(280)
def test_bench_small_prints_every_job_and_ours_never_fails(tmp_path):
    results = tmp_path / "results.json"
    proc = _run_bench(
        "bench.run", "--small", "--data-dir", str(tmp_path / "data"), "--json", str(results), timeout=270
    )
    out = proc.stdout
    header = next(line for line in out.splitlines() if line.startswith("| Job |"))
    for title in ("lit-streaming", *PEERS, *(f"ours / {p}" for p in PEERS)):
        assert title in header
    table_rows = [line for line in out.splitlines() if line.startswith("| P")]
    for key, title in ROWS.items():
        assert any(line.startswith(f"| {title}") for line in table_rows), f"no row for {key}:\n{out}"

    data = json.loads(results.read_text())
    cells = {(c["row"], c["lib"]): c for c in data["cells"]}
    for key in ROWS:
        for lib in ("ours", "litdata", "mosaic", "wds"):
            assert (key, lib) in cells, f"no {key} cell for {lib}"
        ours = cells[(key, "ours")]
        assert (
            ours["status"] == "ok"
        ), f"{key} failed for lit-streaming: {ours['message']} (log {ours['log']})"
    # every row of ours carries a number in the printed table (no ERROR/TIMEOUT marker in its column)
    for line in table_rows:
        ours_cell = line.split("|")[3].strip()
        assert ours_cell and not ours_cell.startswith(("ERROR", "TIMEOUT", "?", "-")), line


def test_a_failing_cell_is_reported_not_raised(tmp_path):
    """A library that fails a job (e.g. s3:// reading not supported yet) yields an error result for that cell,
    which the table shows as ERROR with a footnote, instead of stopping the run."""
    from bench import report, worker
    from bench.config import SMALL
    from bench.report import Cell

    spec = dict(job="P5", lib="ours", path=str(tmp_path / "missing"), sizes=SMALL.to_dict())
    spec["result"] = str(tmp_path / "result.json")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert worker.measure(str(tmp_path / "spec.json")) == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"] is False and result["error"] and "Traceback" in result["traceback"]

    cells = {
        ("P5", "ours"): Cell("error", result, result["error"], log="P5-ours.log"),
        ("P5", "litdata"): Cell("ok", dict(mean_distinct=2.0, ideal=4.0, fraction=0.5)),
    }
    notes = report.Notes()
    text = report.table(cells, ["ours", "litdata"], ["P5"], report.WALL_ROWS, notes)
    row = next(line for line in text.splitlines() if line.startswith("| P5"))
    assert "ERROR [1]" in row and "2.0 of 4.0 (50%)" in row and row.rstrip(" |").endswith("-")
    assert notes.items[0].startswith("P5 lit-streaming: error:")


@pytest.mark.timeout(240)
def test_bench_scale_small_runs_ours_and_litdata(tmp_path):
    """P7's harness on a 300k-block sparse token dataset: every cell reports, none fails (no timing asserts)."""
    rows_file = tmp_path / "scale.json"
    proc = _run_bench(
        "bench.scale",
        "--sizes",
        "300000",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(rows_file),
        timeout=230,
    )
    rows = json.loads(rows_file.read_text())
    assert {(r["lib"], r["workers"]) for r in rows} == {
        ("ours", 0),
        ("ours", 2),
        ("litdata", 0),
        ("litdata", 2),
    }
    for row in rows:
        assert "error" not in row, row
        assert row["samples"] == 300_000 and row["first_20_s"] > 0
    assert "time ours/LitData" in proc.stdout
