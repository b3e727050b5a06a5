"""The ``lit-streaming`` command: LightningCLI with StreamingDataModule, plus dataset inspection.

lit-streaming fit --config configs/demo.yaml
lit-streaming inspect PATH_OR_URL
lit-streaming verify PATH_OR_URL [--block-size N]
lit-streaming index DIR_OR_URL

Dataset commands (inspect, verify, ...) parse their own arguments with argparse and never import Lightning;
a failure is one line on stderr and a non-zero exit, not a traceback. Every other command goes to
LightningCLI (imported only then).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from lit_streaming.errors import LitStreamingError, LitStreamingValueError


def _inspect(path: str) -> int:
    from lit_streaming.formats import detect, open_dataset, read_listing
    from lit_streaming.formats.litdata import read_bound_index
    from lit_streaming.storage import open_source

    source = open_source(path)
    spec = detect(read_listing(source))
    if spec.name != "litdata":  # MDS, WebDataset, Parquet: the format's own summary
        print(
            json.dumps({"dataset": path, **open_dataset(source, spec.name, None, True).describe()}, indent=2)
        )
        return 0
    index = read_bound_index(source)
    sizes = [c.chunk_size for c in index.chunks]
    summary = {
        "dataset": path,
        "format": spec.name,
        "chunks": len(index.chunks),
        "items": sum(sizes),
        "bytes": sum(c.chunk_bytes for c in index.chunks),
        "data_format": index.data_format,
        "item_loader": index.item_loader_name,
        "compression": index.compression,
        "checksums": all(c.checksum for c in index.chunks),
    }
    print(json.dumps(summary, indent=2))
    return 0


def _verify(path: str, block_size: int | None = None) -> int:
    """Read and decode every sample once. A sample that fails names its chunk and item; the first failure of a
    chunk ends that chunk's check (one broken file is one line), the other chunks are still checked.

    Token datasets (TokensLoader) need a block size: ``--block-size``, else the index's ``block_size`` when
    it records one, else the smallest chunk's token count, which makes every chunk yield at least one block,
    so every chunk file is opened and its size and checksum are checked."""
    from lit_streaming.dataset import StreamingDataset
    from lit_streaming.formats import detect, open_dataset, read_listing
    from lit_streaming.formats.litdata import read_bound_index
    from lit_streaming.storage import open_source

    source = open_source(path)
    spec = detect(read_listing(source))
    if spec.name == "litdata":
        index = read_bound_index(source)
        names = [c.filename for c in index.chunks]
        loader_name = index.item_loader_name
    else:  # MDS, WebDataset, Parquet: their shard files
        names = [s.filename for s in open_dataset(source, spec.name, None, True).table.shards]
        loader_name = spec.name
    kwargs: dict = {"allow_pickle": True}
    blocks = ""
    if loader_name == "TokensLoader":
        from lit_streaming.item_loaders import TokensLoader

        dims = [c.dim or 0 for c in index.chunks if c.dim]
        recorded = index.config.get("block_size")
        size = block_size or (recorded if isinstance(recorded, int) and recorded > 0 else None)
        size = size or max(1, min(dims, default=1))
        kwargs["item_loader"] = TokensLoader(size)
        blocks = f" (token blocks of {size})"
    elif block_size is not None:
        raise LitStreamingValueError(f"--block-size applies to token datasets; {path} uses {loader_name}")
    ds = StreamingDataset(path, **kwargs)
    bounds = [0]
    for length in ds.chunk_lengths:
        bounds.append(bounds[-1] + int(length))
    failures = []
    for k in range(len(ds.chunk_lengths)):
        for i in range(bounds[k], bounds[k + 1]):
            try:
                ds.read_sample(i)
            except Exception as err:
                name = names[k] if k < len(names) else f"#{k}"
                failures.append(f"{path}: chunk {name}, item {i - bounds[k]} (sample {i}): {_one_line(err)}")
                break
    for line in failures:
        print(line, file=sys.stderr)
    if failures:
        raise _Failed(f"{len(failures)} of {len(ds.chunk_lengths)} chunks failed verification")
    print(f"{path}: {ds.num_samples} samples{blocks} in {len(ds.chunk_lengths)} chunks read back fine")
    return 0


class _Failed(LitStreamingError):
    """Verification found problems, already printed one per line."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _index(path: str) -> int:
    """Write ``wds-index.json`` beside a WebDataset folder's shards (one pass over each tar's headers), so
    readers open the dataset without scanning them."""
    from lit_streaming.formats import wds
    from lit_streaming.storage import open_source
    from lit_streaming.storage.locations import is_remote

    data, shards, samples = wds.index_folder(open_source(path))
    if is_remote(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(path.removeprefix("local:"))
        fs.pipe_file(f"{root.rstrip('/')}/{wds.INDEX_NAME}", data)
    else:
        target = os.path.join(os.path.expanduser(path.removeprefix("file://")), wds.INDEX_NAME)
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    print(f"{path}: indexed {samples} samples in {shards} shards into {wds.INDEX_NAME}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _dataset_commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]]:
    """name -> (help, add its arguments, run it with the parsed namespace)."""

    def inspect_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", metavar="PATH_OR_URL", help="dataset folder or URL (holding index.json)")

    def verify_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", metavar="PATH_OR_URL", help="dataset folder or URL (holding index.json)")
        p.add_argument(
            "--block-size",
            type=_positive_int,
            default=None,
            help="tokens per sample for a TokensLoader dataset (default: from the index, else the smallest chunk)",
        )

    def index_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", metavar="DIR_OR_URL", help="folder or URL of WebDataset .tar / .tar.gz shards")

    return {
        "inspect": ("print a dataset's chunks, items and formats", inspect_args, lambda a: _inspect(a.path)),
        "index": (
            "write wds-index.json beside WebDataset tar shards, so readers need not scan them",
            index_args,
            lambda a: _index(a.path),
        ),
        "verify": (
            "read and decode every sample; name every corrupt chunk",
            verify_args,
            lambda a: _verify(a.path, a.block_size),
        ),
    }


def _run_dataset_command(name: str, args: list[str]) -> int:
    commands = _dataset_commands()
    help_text, add_arguments, run = commands[name]
    parser = argparse.ArgumentParser(prog=f"lit-streaming {name}", description=help_text)
    add_arguments(parser)
    try:
        parsed = parser.parse_args(args)
    except SystemExit as done:  # --help (0) or a usage error (2, argparse printed the usage): a return code
        return int(done.code or 0)
    try:
        return run(parsed)
    except _Failed as err:
        print(f"lit-streaming {name}: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        print(f"lit-streaming {name}: error: {_one_line(err)}", file=sys.stderr)
        return 1


_LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _print_help() -> None:
    lines = [
        "usage: lit-streaming COMMAND [ARGS]",
        "",
        "Lightning commands (LightningCLI + StreamingDataModule):",
    ]
    lines += [
        f"  {name:<10} run Trainer.{name}; see lit-streaming {name} --help" for name in _LIGHTNING_COMMANDS
    ]
    lines += ["", "Dataset commands:"]
    lines += [f"  {name:<10} {text}" for name, (text, _, _) in _dataset_commands().items()]
    print("\n".join(lines))


def _allow_project_modules() -> None:
    """Let a config's ``class_path`` name a module of the project the command runs in (``demo.models`` in
    configs/demo.yaml), as ``python -m`` does. Appended, so installed packages are never shadowed."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cli_args = None if argv is None else args
    if not args or args[0] in ("-h", "--help"):
        _print_help()
        return 0 if args else 2
    if args[0] in _dataset_commands():
        return _run_dataset_command(args[0], args[1:])
    _allow_project_modules()
    from lightning.pytorch import LightningModule
    from lightning.pytorch.cli import LightningCLI

    from lit_streaming.datamodule import StreamingDataModule

    with warnings.catch_warnings():
        # Lightning warns that an IterableDataset's __len__ "could be inaccurate" with several workers. Ours is
        # exact (each rank and worker takes its share of a plan fixed per epoch; tests prove len == batches).
        warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
        LightningCLI(
            LightningModule,
            StreamingDataModule,
            subclass_mode_model=True,
            args=cli_args,
            save_config_callback=None,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
