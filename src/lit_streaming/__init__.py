"""lit-streaming: stream LitData-format datasets into PyTorch Lightning, exactly once, resumable."""

from lit_streaming.combined import CombinedStreamingDataset
from lit_streaming.dataloader import ResumeError, StreamingDataLoader
from lit_streaming.dataset import StreamingDataset
from lit_streaming.item_loaders import PyTreeLoader, TokensLoader

__all__ = [
    "CombinedStreamingDataset",
    "StreamingDataModule",
    "PyTreeLoader",
    "ResumeError",
    "StreamingDataLoader",
    "StreamingDataset",
    "TokensLoader",
]


def __getattr__(name: str):
    # Lightning is imported only by those who use the DataModule (it adds seconds to every import).
    if name == "StreamingDataModule":
        from lit_streaming.datamodule import StreamingDataModule

        return StreamingDataModule
    raise AttributeError(f"module 'lit_streaming' has no attribute {name!r}")
