"""P7, scale: seconds to the first batches and peak memory per process on token datasets of 50M and 1.5B blocks.

``python -m bench.scale [--small] [--sizes 50000000,1500000000] [--libs ours,litdata]``

The datasets are LitData-layout token datasets of 64 MB chunks made of sparse files (a real header, then a hole
that reads as zeros; ``truncate`` gives the size without the disk) and no checksums, as LitData writes them, so a
1.5-billion-block index costs seconds to make. Every (size, library, workers) cell runs in a fresh process:
import the library (its RSS is reported: torch alone is ~0.5 GB), build ``StreamingDataset(..., TokensLoader(2049),
shuffle=True)`` and a loader of batch 8, take 20 batches, and report the seconds from construction to the first and
the 20th batch and the peak RSS (VmHWM) of the main process and of each worker; plan memory is the peak minus the
RSS after imports. Targets (issue 10): at 50M ours <= LitData in time and peak RSS; at 1.5B the first batch in under
2 s and under 300 MB of plan memory per process.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time

BLOCK = 2049
TOKEN_BYTES = 4  # int32 tokens
CHUNK_BYTES = 64_000_000
BATCH = 8
BATCHES = 20
FULL_SIZES = (50_000_000, 1_500_000_000)
SMALL_SIZES = (2_000_000,)


#: The leaf name LitData (and our writer) gives a 1-D int32 tensor record: torch dtype index 16 (int32's alias).
DATA_FORMAT = ["no_header_tensor:16"]


def make_dataset(root: str, num_blocks: int) -> str:
    """A sparse LitData token dataset of ``num_blocks`` blocks (cached: made once per size)."""
    out = os.path.join(root, f"tokens-{num_blocks}")
    index_path = os.path.join(out, "index.json")
    if os.path.exists(index_path):
        return out
    os.makedirs(out, exist_ok=True)
    blocks_per_chunk = CHUNK_BYTES // TOKEN_BYTES // BLOCK
    tokens_per_chunk = blocks_per_chunk * BLOCK
    chunks, left, k = [], num_blocks, 0
    while left > 0:
        blocks = min(left, blocks_per_chunk)
        tokens = blocks * BLOCK if blocks < blocks_per_chunk else tokens_per_chunk
        name = f"chunk-0-{k}.bin"
        payload = tokens * TOKEN_BYTES
        with open(os.path.join(out, name), "wb") as f:
            f.write(struct.pack("<III", 1, 12, 12 + payload))  # one record, its two offsets
            f.truncate(12 + payload)
        chunks.append({"chunk_bytes": 12 + payload, "chunk_size": 1, "dim": tokens, "filename": name})
        left -= blocks
        k += 1
    config = {
        "chunk_bytes": CHUNK_BYTES,
        "chunk_size": None,
        "compression": None,
        "data_format": DATA_FORMAT,
        "data_spec": None,
        "encryption": None,
        "item_loader": "TokensLoader",
    }
    tmp = index_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"chunks": chunks, "config": config, "updated_at": str(time.time())}, f, sort_keys=True)
    os.replace(tmp, index_path)
    return out


def _status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status (VmRSS: now, VmHWM: the peak), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cell(lib: str, path: str, workers: int) -> dict:
    """Run in a fresh process: build, take BATCHES batches, report time and peak RSS per process."""
    if lib == "ours":
        import lit_streaming as lib_module
    else:
        import litdata as lib_module
    _ = (lib_module.StreamingDataset, lib_module.StreamingDataLoader, lib_module.TokensLoader)  # lazy exports
    me = os.getpid()
    imported_rss = _status_mb(me, "VmRSS")  # torch and the library: the same for every dataset size
    t0 = time.perf_counter()
    ds = lib_module.StreamingDataset(path, item_loader=lib_module.TokensLoader(BLOCK), shuffle=True)
    loader = lib_module.StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers)
    built = time.perf_counter() - t0
    it = iter(loader)
    first = None
    for k in range(BATCHES):
        batch = next(it)
        assert batch.shape == (BATCH, BLOCK), batch.shape
        if k == 0:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    workers_rss = [_status_mb(p, "VmHWM") for p in _children(me)]
    return {
        "lib": lib,
        "workers": workers,
        "samples": len(ds),
        "build_s": round(built, 3),
        "first_batch_s": round(first or 0.0, 3),
        "first_20_s": round(total, 3),
        "import_rss_mb": round(imported_rss, 1),
        "main_peak_rss_mb": round(_status_mb(me, "VmHWM"), 1),
        "worker_peak_rss_mb": [round(x, 1) for x in workers_rss],
    }


def _warm(path: str) -> None:
    """Read every file's inode and first page once before the cells, so the first cell does not pay the disk
    for what the later ones find cached (a library that opens more chunks at start-up paid it alone); a
    discarded cell per library then does the same for the code it loads."""
    for entry in os.scandir(path):
        with open(entry.path, "rb") as f:
            f.read(4096 if entry.name != "index.json" else -1)


def run(sizes: tuple[int, ...], libs: list[str], data_dir: str, timeout: float) -> list[dict]:
    rows = []
    for n in sizes:
        t = time.perf_counter()
        path = make_dataset(data_dir, n)
        print(f"[scale] dataset of {n:,} blocks ready in {time.perf_counter() - t:.1f} s: {path}", flush=True)
        t = time.perf_counter()
        _warm(path)
        print(
            f"[scale] its files' metadata and first pages read in {time.perf_counter() - t:.1f} s", flush=True
        )
        for lib in libs:  # one discarded cell per library: the first process reads its code from disk
            cmd = [sys.executable, "-m", "bench.scale", "--cell", lib, path, "0"]
            subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        for lib in libs:
            for workers in (0, 2):
                cmd = [sys.executable, "-m", "bench.scale", "--cell", lib, path, str(workers)]
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
                    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
                    row = (
                        json.loads(last)
                        if done.returncode == 0 and last.startswith("{")
                        else {
                            "lib": lib,
                            "workers": workers,
                            "error": (done.stderr or done.stdout).strip()[-400:],
                        }
                    )
                except subprocess.TimeoutExpired:
                    row = {"lib": lib, "workers": workers, "error": f"timed out after {timeout:.0f} s"}
                row["blocks"] = n
                rows.append(row)
                print(f"[scale] {json.dumps(row)}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| blocks | library | workers | first batch s | first 20 batches s | peak RSS main MB (after imports) "
        "| peak RSS per worker MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['blocks']:,} | {r['lib']} | {r['workers']} | error: {r['error'][:80]} | | | |"
            )
            continue
        per_worker = ", ".join(f"{x:.0f}" for x in r["worker_peak_rss_mb"]) or "-"
        lines.append(
            f"| {r['blocks']:,} | {r['lib']} | {r['workers']} | {r['first_batch_s']:.2f} | {r['first_20_s']:.2f} | "
            f"{r['main_peak_rss_mb']:.0f} ({r['import_rss_mb']:.0f}) | {per_worker} |"
        )
    by = {(r["blocks"], r["lib"], r["workers"]): r for r in rows if "error" not in r}
    for (n, lib, w), r in sorted(by.items()):
        peer = by.get((n, "litdata", w))
        if lib == "ours" and peer:
            lines.append(
                f"\n{n:,} blocks, {w} workers: time ours/LitData {r['first_20_s'] / peer['first_20_s']:.2f}x, "
                f"main peak RSS {r['main_peak_rss_mb'] / peer['main_peak_rss_mb']:.2f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="one 2M-block dataset (a smoke run)")
    parser.add_argument("--sizes", default=None, help="comma-separated block counts")
    parser.add_argument("--libs", default="ours,litdata")
    parser.add_argument("--data-dir", default=".bench_data/scale")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--cell", nargs=3, metavar=("LIB", "PATH", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        lib, path, workers = args.cell
        print(json.dumps(cell(lib, path, int(workers))), flush=True)
        return
    sizes = (
        tuple(int(x) for x in args.sizes.split(","))
        if args.sizes
        else SMALL_SIZES
        if args.small
        else FULL_SIZES
    )
    rows = run(sizes, args.libs.split(","), args.data_dir, args.timeout)
    print(table(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
