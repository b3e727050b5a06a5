"""The printed report: the table of rates and ratios, its footnotes, per-library details, the machine."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.config import LIB_TITLES
from bench.measure import HAVE_ROLLUP

MEMORY_UNIT = "MB PSS" if HAVE_ROLLUP else "MB RSS"
BUSY_WARNING = 0.10  # other load above this share of the machine makes wall-clock rates unreliable
LONG_CELL_S = 5.0  # cells at least this long give a trustworthy other-load reading


@dataclass
class Cell:
    """The outcome of one (job, library) measurement."""

    status: str  # ok | error | timeout | n/a | flaky (best of the rounds that worked; another round failed)
    result: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Row:
    key: str  # the cell row it reads ("P1", "P3 images", ...)
    title: str
    unit: str
    value: Callable[[dict], float]
    higher_is_better: bool = True
    # the machine's ceiling for this row, in its unit, from the ceilings cell's result (None: no ceiling)
    ceiling: Callable[[dict], float] | None = None
    # which round a cell reports: the highest value (rates: other work only ever slows a round down; memory:
    # the conservative figure) or, for latencies, the lowest
    best_is_lowest: bool = False


def _decode_wall(c: dict) -> float:
    return c["decode_wall_rate"] * c["cores"]


def _tokens(c: dict) -> float:
    """Mtokens/s of one thread gathering int32 token batches."""
    return c["token_copy_bytes_s"] / 4 / 1e6


def _tokens_wall(c: dict) -> float:
    return _tokens(c) * c["cores"]


def _first_batches(r: dict) -> list[float]:
    return [e["first_batch_s"] for e in r["epochs"]]


WALL_ROWS = [
    Row(
        "P1", "P1 stream local images, 2 epochs", "images/s", lambda r: r["steady_rate"], ceiling=_decode_wall
    ),
    Row(
        "P2",
        "P2 stream tokens, block 2049",
        "Mtokens/s",
        lambda r: r["steady_rate"] / 1e6,
        ceiling=_tokens_wall,
    ),
    Row("P3 images", "P3 optimize images (JPEG passthrough)", "images/s", lambda r: r["rate"]),
    Row("P3 tokens", "P3 optimize tokens", "docs/s", lambda r: r["rate"]),
    Row(
        "P4",
        "P4 stream images from S3, empty cache",
        "images/s",
        lambda r: r["wall_rate"],
        ceiling=_decode_wall,
    ),
    Row(
        "P5",
        "P5 batch diversity (distinct chunks per batch)",
        "% of ideal",
        lambda r: 100 * r["fraction"],
        ceiling=lambda c: 100.0,
    ),
    Row("P6", "P6 peak memory of the process tree, P1", MEMORY_UNIT, lambda r: r["peak_mb"], False),
    Row(
        "P8",
        "P8 iter(loader) to first batch, each epoch (P1)",
        "s, worst epoch",
        lambda r: max(_first_batches(r)),
        False,
        best_is_lowest=True,
    ),
]

CPU_ROWS = [
    Row(
        "P1",
        "P1 stream local images",
        "images/CPU-s",
        lambda r: r["cpu_rate"],
        ceiling=lambda c: c["decode_rate"],
    ),
    Row(
        "P2",
        "P2 stream tokens",
        "Mtokens/CPU-s",
        lambda r: r["cpu_rate"] / 1e6,
        ceiling=_tokens,
    ),
    Row("P3 images", "P3 optimize images", "images/CPU-s", lambda r: r["cpu_rate"]),
    Row("P3 tokens", "P3 optimize tokens", "docs/CPU-s", lambda r: r["cpu_rate"]),
    Row(
        "P4",
        "P4 stream images from S3",
        "images/CPU-s",
        lambda r: r["cpu_rate"],
        ceiling=lambda c: c["decode_rate"],
    ),
]


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%" if share >= 0.1 else f"{100 * share:.1f}%"


class Notes:
    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, text: str) -> int:
        if text not in self._index:
            self.items.append(text)
            self._index[text] = len(self.items)
        return self._index[text]


def choose(rounds: dict, rows: list[Row]) -> dict:
    """One cell per (row, library) out of its rounds: the best successful round by the row's value (the
    highest rate: interference from other work only ever slows a round down; the largest memory peak, the
    conservative figure). The chosen result keeps every round's value; a round that failed is reported even
    when another succeeded."""
    by_key = {row.key: row for row in rows}
    out = {}
    for (key, lib), cells in rounds.items():
        row = by_key.get(key)
        scored = []
        for c in cells:
            if c.ok and row is not None:
                try:
                    scored.append((float(row.value(c.result)), c))
                except (KeyError, TypeError, ValueError):
                    pass
        failed = [c for c in cells if not c.ok]
        if not scored:
            out[(key, lib)] = failed[0] if failed else cells[0]
            continue
        pick = min if row is not None and row.best_is_lowest else max
        value, best = pick(scored, key=lambda vc: vc[0])
        chosen = Cell(best.status, dict(best.result, rounds=[v for v, _ in scored]), best.message, best.log)
        if failed:
            chosen.status = "flaky"
            chosen.message = f"failed in {len(failed)} of {len(cells)} rounds: {failed[0].message}"
            chosen.log = failed[0].log
        out[(key, lib)] = chosen
    return out


def table(
    cells: dict, libs: list[str], jobs: list[str], rows: list[Row], notes: Notes, ceilings: dict | None = None
) -> str:
    """A markdown table, one row per job: each library's value, then ours / each peer, then the machine's
    ceiling for the job (``ceilings``: the ceilings cell's result) and our value as a share of it."""
    peers = [lib for lib in libs if lib != "ours"]
    header = ["Job", "Unit", *(LIB_TITLES[lib] for lib in libs)]
    if "ours" in libs:
        header += [f"ours / {LIB_TITLES[p]}" for p in peers]
    if ceilings:
        header += ["ceiling", "ours % of ceiling"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    for row in rows:
        if row.key.split()[0] not in jobs:
            continue
        values: dict[str, float | None] = {}
        texts = []
        for lib in libs:
            cell = cells.get((row.key, lib))
            values[lib] = None
            if cell is None:
                texts.append("-")
                continue
            flag = ""
            if not cell.ok:
                n = notes.add(f"{row.key} {LIB_TITLES[lib]}: {cell.status}: {cell.message} (log: {cell.log})")
                if cell.status != "flaky":
                    texts.append(f"{'n/a' if cell.status == 'n/a' else cell.status.upper()} [{n}]")
                    continue
                flag = f" (flaky [{n}])"
            try:
                values[lib] = float(row.value(cell.result))
            except (KeyError, TypeError):
                texts.append("?")
                continue
            text = _fmt(values[lib])
            if row.key == "P5":
                r = cell.result
                text = f"{r['mean_distinct']:.1f} of {r['ideal']:.1f} ({100 * r['fraction']:.0f}%)"
            if row.key == "P8":
                text = " / ".join(f"{v:.2f}" for v in _first_batches(cell.result))
            texts.append(text + flag)
        ratios = []
        if "ours" in libs:
            for peer in peers:
                ours, theirs = values.get("ours"), values.get(peer)
                ratios.append(f"{ours / theirs:.2f}x" if ours and theirs else "-")
        if ceilings:
            limit = row.ceiling(ceilings) if row.ceiling else None
            ours = values.get("ours")
            ratios += [_fmt(limit), _percent(ours / limit) if ours else "-"] if limit else ["-", "-"]
        unit = row.unit if row.higher_is_better else f"{row.unit} (lower is better)"
        lines.append("| " + " | ".join([row.title, unit, *texts, *ratios]) + " |")
    return "\n".join(lines)


def load_summary(cells: dict) -> tuple[str, bool]:
    """One line on how much other work shared the machine during the cells the tables report (the chosen
    rounds), weighted by the cells' durations (a cell of a fraction of a second reads noisily); True when
    it was enough to distort wall-clock rates."""
    loads = [
        (c.result["other_load"], c.result.get("cell_seconds") or 0.0, row, lib)
        for (row, lib), c in cells.items()
        if c.result and c.result.get("other_load") is not None
    ]
    total = sum(seconds for _, seconds, _, _ in loads)
    if not loads or total <= 0:
        return "", False
    mean = sum(load * seconds for load, seconds, _, _ in loads) / total
    long = [x for x in loads if x[1] >= LONG_CELL_S]
    worst = max(long) if long else None
    busy = mean > BUSY_WARNING or (worst is not None and worst[0] > 2 * BUSY_WARNING)
    text = (
        "Other load during the reported cells (CPU used by processes outside the benchmark, share of all "
        f"cores): {100 * mean:.0f}% on average"
    )
    if worst is not None:
        text += f", at most {100 * worst[0]:.0f}% in a cell of {LONG_CELL_S:g} s or more ({worst[2]} {LIB_TITLES[worst[3]]})"
    text += "."
    if busy:
        text += (
            " WARNING: the machine was busy; wall-clock rates and ratios are unreliable, the CPU-normalised "
            "table much less so."
        )
    return text, busy


def _ok(cell) -> bool:
    return cell is not None and cell.status in ("ok", "flaky")


def details(cells: dict, libs: list[str], repeat: int = 1) -> list[str]:
    out = []
    for lib in libs:
        parts = []
        if repeat > 1:
            spread = []
            for row in WALL_ROWS:
                c = cells.get((row.key, lib))
                if _ok(c) and len(c.result.get("rounds", [])) > 1:
                    spread.append(f"{row.key} " + " / ".join(_fmt(v) for v in c.result["rounds"]))
            if spread:
                parts.append("rounds: " + ", ".join(spread))
        c = cells.get(("P1", lib))
        if _ok(c):
            r = c.result
            firsts = ", ".join(f"{e['first_batch_s']:.2f}s" for e in r["epochs"])
            parts.append(
                f"P1 {r['wall_rate']:,.0f} images/s including start-up, first batch of each epoch {firsts}"
            )
        c = cells.get(("P2", lib))
        if _ok(c):
            r = c.result
            parts.append(
                f"P2 {r['wall_rate'] / 1e6:.2f} Mtokens/s including start-up, batch {r['batch']['shape']}"
            )
        c = cells.get(("P4", lib))
        if _ok(c):
            r = c.result
            steady = f"{r['steady_rate']:,.0f}" if r.get("steady_rate") else "?"
            parts.append(
                f"P4 first batch {r['epochs'][0]['first_batch_s']:.2f}s, after warm-up {steady} images/s"
            )
        c = cells.get(("P5", lib))
        if _ok(c):
            r = c.result
            parts.append(f"P5 {r['chunks']} chunks, {r['full_batches']} full batches")
        c = cells.get(("P6", lib))
        if _ok(c) and c.result:
            r = c.result
            at = r.get("at_peak_mb") or {}
            split = (
                f" (anonymous {at.get('Pss_Anon', 0):,.0f}, file-backed {at.get('Pss_File', 0):,.0f}, "
                f"shared memory {at.get('Pss_Shmem', 0):,.0f})"
                if HAVE_ROLLUP
                else ""
            )
            shmem = r.get("peak_system_shmem_mb")
            shmem_note = (
                f", machine's shared memory at most +{shmem:,.0f} MB (batches in flight, mapped or not)"
                if shmem is not None
                else ""
            )
            parts.append(
                f"P6 peak {r['peak_mb']:,.0f} MB{split}, RSS summed {r['peak_rss_sum_mb']:,.0f} MB, "
                f"{r['peak_processes']} processes{shmem_note}"
            )
        for key in ("P3 images", "P3 tokens"):
            c = cells.get((key, lib))
            if _ok(c):
                r = c.result
                imports = (
                    f" (imports before the clock {r['import_seconds']:.2f}s)" if "import_seconds" in r else ""
                )
                parts.append(
                    f"{key}: {r['items']:,} in {r['seconds']:.2f}s{imports}, {r['bytes'] / 1e6:,.0f} MB, {r['note']}"
                )
        if parts:
            out.append(f"- {LIB_TITLES[lib]}: " + "; ".join(parts))
    return out


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in (
        "lit-streaming",
        "litdata",
        "mosaicml-streaming",
        "webdataset",
        "torch",
        "torchvision",
        "numpy",
    ):
        try:
            versions[package] = version(package)
        except Exception:  # noqa: BLE001
            versions[package] = "not installed"
    return dict(
        git=_git_state(),
        cpu=cpu,
        cores=os.cpu_count(),
        memory_gib=round(mem / 2**30, 1),
        python=platform.python_version(),
        kernel=platform.release(),
        versions=versions,
    )


def _git_state() -> str:
    """The commit the run measured and whether our sources had uncommitted changes."""
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes in src/" if dirty else "")


def machine_line(info: dict) -> str:
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Linux {info['kernel']}; "
        f"Python {info['python']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + f"; code at {info.get('git', 'unknown')}"
    )


def ceiling_line(c: dict) -> str:
    return (
        f"Ceilings (one thread, same run, best round): torchvision decodes these JPEGs at "
        f"{c['decode_rate']:,.0f} images per CPU-second ({c['decode_images']:,} of them, in memory); a batch of "
        f"token blocks ({c['token_batch_bytes'] / 1e3:,.0f} kB) copies at {c['token_copy_bytes_s'] / 1e9:.1f} GB/s "
        f"and an image batch ({c['image_batch_bytes'] / 1e6:.1f} MB) at {c['image_copy_bytes_s'] / 1e9:.1f} GB/s. "
        f"Wall-clock ceilings are {c['cores']} cores times the one-thread rate; P5's is the ideal."
    )
