"""One (job, library) measurement in a fresh process: ``python -m bench.worker SPEC_JSON``.

The spec names the job, the library and the paths; the result (or the error with its traceback) is written
as JSON to ``spec["result"]``. The harness (``bench.run``) starts one of these per cell so no library's
global state (multiprocessing start method, caches, shared memory, threads) leaks into another's.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import time
import traceback
import warnings
from typing import Any

import numpy as np

from bench.config import Sizes
from bench.measure import own_cpu_seconds, stream


def library(name: str):
    return importlib.import_module(f"bench.lib_{name}")


def _count_images(batch: Any) -> int:
    return len(batch["label"])


def _count_tokens(batch: Any) -> int:
    return int(batch.numel())


def _shape(batch: Any, key: str | None = None) -> dict:
    x = batch[key] if key else batch
    return dict(shape=list(x.shape), dtype=str(x.dtype), type=type(x).__name__)


def write(lib, spec: dict, sizes: Sizes) -> dict:
    kind, out = spec["kind"], spec["out"]
    shutil.rmtree(out, ignore_errors=True)
    cpu0 = own_cpu_seconds()
    t0 = time.perf_counter()
    if kind == "images":
        lib.write_images(spec["raw"], out, sizes)
        items = sizes.images
    else:
        items = lib.write_tokens(spec["raw"], out, sizes)
    seconds = time.perf_counter() - t0
    cpu = own_cpu_seconds() - cpu0  # writer workers have been reaped: their CPU is in RUSAGE_CHILDREN
    result = dict(items=items, seconds=seconds, rate=items / seconds, note=lib.WRITE_NOTE)
    result.update(cpu_seconds=cpu, cpu_rate=items / cpu if cpu > 0 else None)
    result["bytes"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(out) for f in files)
    if kind == "images":  # a writer that silently lost samples must not get a rate
        found = lib.count_images(out)
        if found != items:
            raise RuntimeError(f"wrote {found} images, expected {items}")
    return result


def stream_images(lib, spec: dict, sizes: Sizes, epochs: int, s3: dict | None = None) -> dict:
    result = stream(
        lambda: lib.image_loader(spec["path"], sizes, s3), epochs, _count_images, sizes.warmup_batches
    )
    batch = result.pop("first_batch")
    result["batch"] = _shape(batch, "image")
    expected = [sizes.batch_size, 3, 256, 320]
    if result["batch"]["shape"] != expected or result["batch"]["dtype"] != "torch.uint8":
        raise RuntimeError(f"first batch is {result['batch']}, expected uint8 {expected}")
    if result["items"] != epochs * sizes.images:
        raise RuntimeError(f"streamed {result['items']} images, expected {epochs * sizes.images}")
    return result


def stream_tokens(lib, spec: dict, sizes: Sizes) -> dict:
    result = stream(
        lambda: lib.token_loader(spec["path"], sizes), sizes.token_epochs, _count_tokens, sizes.warmup_batches
    )
    batch = result.pop("first_batch")
    result["batch"] = _shape(batch)
    if result["batch"]["shape"] != [sizes.token_batch_size, sizes.block_size]:
        raise RuntimeError(f"first batch is {result['batch']}")
    return result


def diversity(lib, spec: dict, sizes: Sizes) -> dict:
    loader, num_chunks = lib.chunk_id_loader(spec["path"], sizes)
    distinct, samples = [], 0
    for batch in loader:
        ids = np.asarray(batch)
        samples += len(ids)
        if len(ids) == sizes.batch_size:
            distinct.append(len(np.unique(ids)))
    c, b = num_chunks, sizes.batch_size
    ideal = c * (1 - (1 - 1 / c) ** b)
    mean = float(np.mean(distinct)) if distinct else float("nan")
    return dict(
        mean_distinct=mean,
        ideal=ideal,
        fraction=mean / ideal,
        chunks=c,
        full_batches=len(distinct),
        samples=samples,
    )


def ceilings(spec: dict, sizes: Sizes) -> dict:
    """The machine's ceilings for the streaming jobs, measured on one thread: decoding the benchmark's own
    JPEGs with torchvision's op (what every library's loader calls; P1/P4 cannot beat it per CPU-second), and
    copying a batch's bytes from memory into a buffer that is already touched (P2: a batch of token blocks is
    at best one gather of its blocks). The files are read into memory first, so no I/O is timed."""
    import torch
    import torchvision.io  # noqa: F401 - registers torch.ops.image

    torch.set_num_threads(1)
    folder = os.path.join(spec["raw"], "images")
    names = sorted(os.listdir(folder))
    step = max(1, len(names) // min(len(names), spec.get("decode_images", 4000)))
    encoded = []
    for name in names[::step]:
        with open(os.path.join(folder, name), "rb") as f:
            encoded.append(torch.frombuffer(bytearray(f.read()), dtype=torch.uint8))
    decode = torch.ops.image.decode_jpeg
    for data in encoded[:32]:  # warm the decoder's code and allocator
        decode(data, 3, False)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for data in encoded:
        decode(data, 3, False)
    decode_cpu, decode_wall = time.process_time() - cpu0, time.perf_counter() - t0

    # Copies read from a buffer larger than the caches, as a loader reads page-cache pages of its chunks.
    source = torch.ones(256 << 20, dtype=torch.uint8)

    def gather_rate(rows: int, row_bytes: int, seconds: float = 1.0) -> float:
        """Bytes per second of gathering ``rows`` random rows of ``row_bytes`` into one reused buffer (one
        vectorised call per batch)."""
        table = source[: source.numel() // row_bytes * row_bytes].view(-1, row_bytes)
        out = torch.zeros((rows, row_bytes), dtype=torch.uint8)
        picks = torch.randint(0, table.shape[0], (4096, rows))  # 4096 batches: the whole source
        copies, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            for idx in picks:
                torch.index_select(table, 0, idx, out=out)
            copies += len(picks)
        return copies * rows * row_bytes / (time.perf_counter() - t)

    token_batch = sizes.token_batch_size * sizes.block_size * 4
    image_batch = sizes.batch_size * 3 * 256 * 320
    return dict(
        decode_images=len(encoded),
        decode_rate=len(encoded) / decode_cpu,  # images per CPU-second of one thread
        decode_wall_rate=len(encoded) / decode_wall,
        token_copy_bytes_s=gather_rate(sizes.token_batch_size, sizes.block_size * 4),
        image_copy_bytes_s=gather_rate(1, image_batch),
        token_batch_bytes=token_batch,
        image_batch_bytes=image_batch,
        cores=os.cpu_count() or 1,
    )


def run(spec: dict) -> dict:
    sizes = Sizes(**spec["sizes"])
    if spec["job"] == "ceilings":  # the machine's, not a library's
        return ceilings(spec, sizes)
    lib = library(spec["lib"])
    # What the job uses of the library, and torchvision, is imported before any clock starts (a training
    # script imports them at the top); DataLoader workers fork from this process and inherit them.
    t0 = time.perf_counter()
    lib.preload(spec["job"])
    imports = time.perf_counter() - t0
    result = _job(lib, spec, sizes)
    result["import_seconds"] = imports
    return result


def _job(lib, spec: dict, sizes: Sizes) -> dict:
    job = spec["job"]
    if job == "write":
        return write(lib, spec, sizes)
    if job == "P1":
        return stream_images(lib, spec, sizes, sizes.epochs)
    if job == "P2":
        return stream_tokens(lib, spec, sizes)
    if job == "P4":
        return stream_images(lib, spec, sizes, 1, s3=spec["s3"])
    if job == "P5":
        return diversity(lib, spec, sizes)
    raise ValueError(f"unknown job {job!r}")


def measure(spec_path: str) -> int:
    """Run the cell described by the spec file; write its result (or error) file; return an exit code."""
    with open(spec_path) as f:
        spec = json.load(f)
    warnings.filterwarnings("ignore")
    try:
        result = dict(ok=True, **run(spec))
        code = 0
    except BaseException as err:  # noqa: BLE001  (reported in the table, never raised past the cell)
        result = dict(ok=False, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        code = 1
    result["cell_cpu_seconds"] = own_cpu_seconds()  # the whole cell, its reaped workers included
    tmp = spec["result"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(tmp, spec["result"])
    return code


def main(argv: list[str] | None = None) -> None:
    """Entry point of a fresh interpreter: ``python -c "[prelude;] from bench.worker import main; main()" SPEC``."""
    argv = sys.argv[1:] if argv is None else argv
    sys.exit(measure(argv[0]))


def noop() -> None:
    """Started once when the zygote comes up, so its imports happen before any cell is timed."""


def forked_main(spec_path: str, log_path: str, cwd: str, env: dict[str, str], prelude: str | None) -> None:
    """Entry point of a process forked from the harness's zygote (a forkserver that has imported torch,
    torchvision and numpy, and none of the libraries): the same as ``main`` in a fresh interpreter, minus
    the seconds of importing torch again."""
    import atexit
    import multiprocessing

    # Children of this process (DataLoader workers, writer workers) start as a fresh interpreter's would:
    # by fork, Linux's default, rather than through the zygote.
    multiprocessing.set_start_method("fork", force=True)
    os.setsid()  # its own process group, which the harness kills on a timeout
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(cwd)
    os.environ.update(env)
    if prelude:
        exec(prelude, {})
    code = measure(spec_path)
    atexit._run_exitfuncs()  # multiprocessing children end with os._exit; libraries clean up at exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
