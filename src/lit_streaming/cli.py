"""The ``lit-streaming`` command: LightningCLI with StreamingDataModule, plus dataset inspection.

lit-streaming fit --config configs/demo.yaml
lit-streaming inspect PATH_OR_URL
lit-streaming verify PATH_OR_URL
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from lit_streaming.datamodule import StreamingDataModule


def _inspect(path: str) -> int:
    from lit_streaming.storage import open_source

    index = open_source(path).read_index()
    sizes = [c.chunk_size for c in index.chunks]
    summary = {
        "dataset": path,
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


def _verify(path: str) -> int:
    """Read every sample once; any corrupt chunk raises an error naming it."""
    from lit_streaming.dataset import StreamingDataset

    ds = StreamingDataset(path, allow_pickle=True)
    for i in range(ds.num_samples):
        ds.read_sample(i)
    print(f"{path}: {ds.num_samples} samples in {len(ds.chunk_lengths)} chunks read back fine")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cli_args = None if argv is None else args
    if args and args[0] in ("inspect", "verify"):
        if len(args) != 2:
            print(f"usage: lit-streaming {args[0]} PATH_OR_URL", file=sys.stderr)
            return 2
        return _inspect(args[1]) if args[0] == "inspect" else _verify(args[1])
    from lightning.pytorch import LightningModule
    from lightning.pytorch.cli import LightningCLI

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
