"""lit-streaming: stream LitData-format datasets into PyTorch Lightning, exactly once, resumable."""

from lit_streaming.combined import CombinedStreamingDataset
from lit_streaming.dataloader import ResumeError, StreamingDataLoader
from lit_streaming.dataset import StreamingDataset
from lit_streaming.item_loaders import PyTreeLoader, TokensLoader

__all__ = [
    "CombinedStreamingDataset",
    "PyTreeLoader",
    "ResumeError",
    "StreamingDataLoader",
    "StreamingDataset",
    "TokensLoader",
]
