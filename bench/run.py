"""Run the benchmark: ``python -m bench.run [--small] [--jobs P1,P2,...] [--libs ours,litdata,...]``.

Generates (once, cached under ``--data-dir``, default ``.bench_data/``) the raw images and tokens, writes each
library's datasets once (cached), then runs every (job, library) cell in a fresh subprocess and prints one
table with each library's rate and our ratio to each peer. A cell that fails or times out is reported as
such; the run goes on. See docs/bench.md for what each job measures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from bench import data, report
from bench.config import FROM_P1, FULL, JOBS, LIBS, SMALL, Sizes
from bench.measure import TreeMemorySampler, machine_busy_seconds
from bench.report import Cell

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET_FORMAT = 1  # bump when a writer's settings change, to rewrite the cached datasets
# LitData 0.2.76 downloads through obstore when it is installed, and obstore refuses plain-http endpoints such
# as the loopback S3 server: its P4 process blocks the import and marks obstore unavailable (LitData asks
# package metadata, not the import system) so LitData falls back to boto3.
PRELUDES = {
    ("litdata", "P4"): (
        "import sys; sys.modules['obstore'] = None; "
        "import litdata.constants as c; c._OBSTORE_AVAILABLE.available = False"
    )
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Harness:
    def __init__(self, sizes: Sizes, data_dir: str, libs: list[str], repeat: int = 1) -> None:
        self.sizes = sizes
        self.repeat = repeat
        self.round = 0
        self.data_dir = os.path.abspath(data_dir)
        self.libs = libs
        self.run_dir = os.path.join(self.data_dir, "runs", f"{sizes.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.makedirs(self.run_dir, exist_ok=True)
        self.tmp = os.path.join(self.data_dir, "tmp", sizes.name)
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        self.raw = data.ensure(self.data_dir, sizes, log)
        self.rounds: dict[tuple[str, str], list[Cell]] = {}  # (row, lib) -> one cell per round
        self.prepare_failures: dict[tuple[str, str], Cell] = {}
        self.extra: dict[str, Any] = {}
        self.ceiling_rounds: list[dict] = []
        self._ctx = None

    # ---- subprocess per cell ---------------------------------------------------------------------------
    def _zygote(self):
        if self._ctx is None:
            import multiprocessing

            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload(["numpy", "torch", "torchvision.io", "bench.worker"])
            from bench.worker import noop

            warm = self._ctx.Process(target=noop)  # start the server (its imports) before any cell's clock
            warm.start()
            warm.join()
        return self._ctx

    def cell(
        self, name: str, lib: str, spec: dict, env: dict | None = None, sample_memory: bool = False
    ) -> tuple[Cell, dict | None]:
        """Run one cell in a new process and collect its result.

        Cells fork from the zygote (a forkserver that has imported torch, torchvision and numpy but none of the
        libraries), which saves seconds of imports per cell. In the full run the cell that samples memory
        (P1/P6) starts a fresh interpreter instead, so its process tree shares no pages with anything outside
        it and the summed PSS is exact; the small run forks it too (its PSS then leaves out the pages still
        shared with the zygote, mostly torch's code).
        """
        spec = dict(spec, lib=lib, sizes=self.sizes.to_dict())
        stem = os.path.join(
            self.run_dir, f"{name}-{lib}" + (f"-r{self.round + 1}" if self.repeat > 1 else "")
        )
        spec["result"] = stem + ".result.json"
        with open(stem + ".spec.json", "w") as f:
            json.dump(spec, f, indent=1)
        prelude = PRELUDES.get((lib, spec["job"]))
        zygote = None if sample_memory and not self.sizes.fork_memory_cell else self._zygote()
        busy0, mine0 = machine_busy_seconds(), _self_cpu()
        t0 = time.perf_counter()
        if zygote is None:
            code = (prelude + "; " if prelude else "") + "from bench.worker import main; main()"
            child_env = dict(os.environ, **(env or {}))
            child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
            with open(stem + ".log", "w") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-c", code, stem + ".spec.json"],
                    cwd=REPO,
                    env=child_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                sampler = TreeMemorySampler(proc.pid).start()
                try:
                    proc.wait(timeout=self.sizes.job_timeout_s)
                    timed_out = False
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(proc.pid)
                    proc.wait()
                memory = sampler.stop()
                returncode = proc.returncode
        else:
            from bench.worker import forked_main

            args = (stem + ".spec.json", stem + ".log", REPO, env or {}, prelude)
            proc = zygote.Process(target=forked_main, args=args, name=f"{name}-{lib}")
            proc.start()
            sampler = TreeMemorySampler(proc.pid).start() if sample_memory else None
            proc.join(self.sizes.job_timeout_s)
            timed_out = proc.exitcode is None
            if timed_out:
                _kill_group(proc.pid)
                proc.join()
            memory, returncode = sampler.stop() if sampler else None, proc.exitcode
        seconds = time.perf_counter() - t0
        busy, mine = machine_busy_seconds() - busy0, _self_cpu() - mine0
        try:
            with open(spec["result"]) as f:
                result = json.load(f)
        except (OSError, ValueError):
            result = None
        other = None  # share of the machine that processes outside this cell (and the harness) used
        if result and result.get("cell_cpu_seconds") is not None and seconds > 0:
            foreign = busy - result["cell_cpu_seconds"] - mine
            other = max(0.0, foreign / (seconds * (os.cpu_count() or 1)))
            result.update(other_load=other, cell_seconds=seconds)
        if timed_out:
            cell = Cell("timeout", message=f"no result after {self.sizes.job_timeout_s}s", log=stem + ".log")
        elif result is None:
            cell = Cell("error", message=f"worker exited with code {returncode}", log=stem + ".log")
        elif not result.get("ok"):
            cell = Cell("error", result, result.get("error", "?"), log=stem + ".log")
        else:
            cell = Cell("ok", result, log=stem + ".log")
        status = cell.status if cell.ok else f"{cell.status.upper()}: {cell.message[:200]}"
        busy_note = f"  other load {100 * other:3.0f}%" if other is not None else ""
        log(f"{name:<10} {lib:<8} {seconds:6.1f}s{busy_note}  {status}")
        return cell, memory

    # ---- cached datasets ---------------------------------------------------------------------------------
    def _marker(self, lib: str, kind: str) -> dict:
        from importlib.metadata import version

        package = {"ours": "lit-streaming", "litdata": "litdata", "mosaic": "mosaicml-streaming"}.get(
            lib, "webdataset"
        )
        keys = (
            "images",
            "tokens",
            "mean_doc_tokens",
            "image_chunk_bytes",
            "token_chunk_tokens",
            "block_size",
        )
        marker = dict(
            format=DATASET_FORMAT,
            version=version(package),
            raw=self.raw.manifest(),
            sizes={k: getattr(self.sizes, k) for k in keys},
        )
        if lib == "ours":  # our version number stays put while the writer changes: key on its source
            marker["source"] = _source_digest()
        return marker

    def dataset_path(self, lib: str, kind: str) -> str:
        return os.path.join(self.data_dir, "datasets", self.sizes.name, lib, kind)

    def _cached(self, lib: str, kind: str) -> bool:
        try:
            with open(self.dataset_path(lib, kind) + ".json") as f:
                return json.load(f) == self._marker(lib, kind)
        except (OSError, ValueError):
            return False

    def _adopt(self, lib: str, kind: str, written: str) -> None:
        path = self.dataset_path(lib, kind)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(written, path)
        with open(path + ".json", "w") as f:
            json.dump(self._marker(lib, kind), f)

    def ensure_dataset(self, lib: str, kind: str) -> str | None:
        """The cached dataset's path, written first (untimed) when missing; None when writing failed."""
        path = self.dataset_path(lib, kind)
        if self._cached(lib, kind):
            return path
        out = os.path.join(self.tmp, f"prepare-{lib}-{kind}")
        spec = dict(job="write", kind=kind, raw=self.raw.root, out=out)
        cell, _ = self.cell(f"prepare-{kind}", lib, spec)
        if not cell.ok:
            self.prepare_failures[(kind, lib)] = cell
            return None
        self._adopt(lib, kind, out)
        return path

    # ---- jobs --------------------------------------------------------------------------------------------
    def _unavailable(self, job: str, lib: str, kind: str) -> Cell:
        prep = self.prepare_failures.get((kind, lib))
        why = f"its {kind} dataset could not be written ({prep.message if prep else '?'})"
        return Cell("error", message=why, log=prep.log if prep else "")

    def p3(self) -> None:
        for kind, row in (("images", "P3 images"), ("tokens", "P3 tokens")):
            for lib in self.order():
                out = os.path.join(self.tmp, f"p3-{lib}-{kind}")
                spec = dict(job="write", kind=kind, raw=self.raw.root, out=out)
                cell, _ = self.cell(f"P3-{kind}", lib, spec)
                self.record(row, lib, cell)
                if cell.ok:  # the freshly written dataset becomes the cached one the streaming jobs read
                    self._adopt(lib, kind, out)
                shutil.rmtree(out, ignore_errors=True)

    def p1_p6(self, jobs: list[str]) -> None:
        for lib in self.order():
            path = self.ensure_dataset(lib, "images")
            if path is None:
                cell = memory_cell = self._unavailable("P1", lib, "images")
            else:
                cell, memory = self.cell("P1", lib, dict(job="P1", path=path), sample_memory=True)
                memory_cell = Cell(cell.status, memory or {}, cell.message, cell.log)
                cell.result["memory"] = memory
            for job in ("P1", "P8"):
                if job in jobs:
                    self.record(job, lib, cell)
            if "P6" in jobs:
                self.record("P6", lib, memory_cell)

    def p2(self) -> None:
        for lib in self.order():
            path = self.ensure_dataset(lib, "tokens")
            cell = (
                self._unavailable("P2", lib, "tokens")
                if path is None
                else self.cell("P2", lib, dict(job="P2", path=path))[0]
            )
            self.record("P2", lib, cell)

    def p4(self) -> None:
        from bench.s3 import LoopbackS3

        paths = {lib: self.ensure_dataset(lib, "images") for lib in self.libs}
        with LoopbackS3() as server:
            uploads = {}
            for lib in self.libs:
                if paths[lib] is None:
                    continue
                t0 = time.perf_counter()
                files, size = server.upload(paths[lib], f"{lib}/images")
                uploads[lib] = dict(files=files, bytes=size, seconds=time.perf_counter() - t0)
            log(
                "uploaded to the loopback S3 server: "
                + ", ".join(
                    f"{lib} {u['files']} files {u['bytes'] / 1e6:.0f} MB" for lib, u in uploads.items()
                )
            )
            self.extra["p4_uploads"] = uploads
            for lib in self.order():
                if paths[lib] is None:
                    self.record("P4", lib, self._unavailable("P4", lib, "images"))
                    continue
                cache = os.path.join(self.tmp, f"p4-cache-{lib}")
                shutil.rmtree(cache, ignore_errors=True)
                spec = dict(job="P4", path=paths[lib], s3=server.spec(lib, cache))
                self.record("P4", lib, self.cell("P4", lib, spec, env=server.env())[0])
                shutil.rmtree(cache, ignore_errors=True)

    def p5(self) -> None:
        for lib in self.libs:
            path = self.ensure_dataset(lib, "images")
            cell = (
                self._unavailable("P5", lib, "images")
                if path is None
                else self.cell("P5", lib, dict(job="P5", path=path))[0]
            )
            self.record("P5", lib, cell)

    def measure_ceilings(self) -> None:
        cell, _ = self.cell("ceilings", "machine", dict(job="ceilings", raw=self.raw.root))
        if cell.ok:
            self.ceiling_rounds.append(cell.result)

    def ceilings(self) -> dict | None:
        """Each ceiling's best round (other work only lowers a round's rates)."""
        if not self.ceiling_rounds:
            return None
        keys = ("decode_rate", "decode_wall_rate", "token_copy_bytes_s", "image_copy_bytes_s")
        best = dict(self.ceiling_rounds[0])
        best.update({k: max(r[k] for r in self.ceiling_rounds) for k in keys})
        return best

    def record(self, row: str, lib: str, cell: Cell) -> None:
        self.rounds.setdefault((row, lib), []).append(cell)

    def order(self) -> list[str]:
        """Libraries in run order: reversed every other round, so a drift in the machine's load does not
        always favour the same library."""
        return list(self.libs) if self.round % 2 == 0 else list(reversed(self.libs))

    def run(self, jobs: list[str]) -> None:
        for r in range(self.repeat):
            self.round = r
            if self.repeat > 1:
                log(f"round {self.round + 1} of {self.repeat}")
            self.measure_ceilings()
            if "P3" in jobs:
                self.p3()
            if any(job in jobs for job in FROM_P1):
                self.p1_p6(jobs)
            if "P2" in jobs:
                self.p2()
            if "P4" in jobs:
                self.p4()
        if "P5" in jobs:  # deterministic: one round
            self.p5()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _source_digest() -> str:
    """A digest of our writer's and on-disk format's source files (src/lit_streaming_writer, .../format)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=12)
    for folder in ("src/lit_streaming_writer", "src/lit_streaming/format"):
        root = os.path.join(REPO, folder)
        for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            if name.endswith(".py"):
                with open(os.path.join(root, name), "rb") as f:
                    digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def _self_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)  # the harness's threads: memory sampler, S3 server
    return usage.ru_utime + usage.ru_stime


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes (a smoke run, well under a minute)")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated subset of P1..P8")
    parser.add_argument("--libs", default=",".join(LIBS), help="comma-separated subset of " + ",".join(LIBS))
    parser.add_argument("--data-dir", default=os.path.join(REPO, ".bench_data"), help="cache and run logs")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this path")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds of the timed jobs (P1-P4, P6, P8); each cell reports its best round (default: 2, small: 1)",
    )
    args = parser.parse_args(argv)
    jobs = [j.strip().upper() for j in args.jobs.split(",") if j.strip()]
    libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    for j in jobs:
        if j not in JOBS:
            parser.error(f"unknown job {j!r}; choose from {','.join(JOBS)}")
    for lib in libs:
        if lib not in LIBS:
            parser.error(f"unknown library {lib!r}; choose from {','.join(LIBS)}")
    sizes = SMALL if args.small else FULL
    t0 = time.perf_counter()
    repeat = args.repeat if args.repeat is not None else sizes.repeat
    harness = Harness(sizes, args.data_dir, libs, max(1, repeat))
    harness.run(jobs)
    elapsed = time.perf_counter() - t0
    notes = report.Notes()
    wall_cells = report.choose(harness.rounds, report.WALL_ROWS)
    cpu_cells = report.choose(harness.rounds, report.CPU_ROWS)
    ceilings = harness.ceilings()
    wall = report.table(wall_cells, libs, jobs, report.WALL_ROWS, notes, ceilings)
    cpu = report.table(cpu_cells, libs, jobs, report.CPU_ROWS, notes, ceilings)
    load, busy = report.load_summary(wall_cells)
    info = report.machine()
    manifest = harness.raw.manifest()
    title = (
        f"{sizes.name} size: {sizes.images:,} JPEGs ({manifest['image_bytes'] / 1e6:.0f} MB), "
        f"{sizes.tokens / 1e6:g}M tokens in {manifest['documents']:,} documents; batch {sizes.batch_size} "
        f"(tokens: {sizes.token_batch_size}), {sizes.num_workers} workers, shuffle on"
    )
    lines = ["", f"## Benchmark ({title})", "", wall, ""]
    if any(r.key.split()[0] in jobs for r in report.CPU_ROWS):
        lines += [
            "Per CPU-second of the whole process tree (steady state; robust to other load):",
            "",
            cpu,
            "",
        ]
    lines += [report.ceiling_line(ceilings)] if ceilings else []
    lines += [f"[{n}] {text}" for n, text in enumerate(notes.items, 1)]
    lines += report.details(wall_cells, libs, harness.repeat)
    lines += ["", load] if load else []
    lines += [report.machine_line(info), f"Total time {elapsed:.0f}s; logs in {harness.run_dir}"]
    print("\n".join(lines), flush=True)
    results = dict(
        sizes=sizes.to_dict(),
        jobs=jobs,
        libs=libs,
        machine=info,
        seconds=elapsed,
        raw=manifest,
        table=wall,
        cpu_table=cpu,
        notes=notes.items,
        busy=busy,
        load=load,
        extra=harness.extra,
        ceilings=ceilings,
        ceiling_rounds=harness.ceiling_rounds,
        repeat=harness.repeat,
        cells=[
            dict(row=row, lib=lib, status=c.status, message=c.message, log=c.log, result=c.result)
            for (row, lib), c in wall_cells.items()
        ],
        rounds=[
            dict(
                row=row, lib=lib, round=k + 1, status=c.status, message=c.message, log=c.log, result=c.result
            )
            for (row, lib), cells in harness.rounds.items()
            for k, c in enumerate(cells)
        ],
    )
    for path in filter(None, [os.path.join(harness.run_dir, "results.json"), args.json]):
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
