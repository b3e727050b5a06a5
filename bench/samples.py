"""Picklable sample functions every writer calls (LitData's optimize spawns its workers, so they must
be importable), and the token-block cutter the peers without a block loader write with."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bench.data import Raw


class ImageSample:
    """Input ``i`` -> ``{"image": PIL JPEG opened from its file, "label": int}`` (JPEG passthrough)."""

    def __init__(self, raw_root: str) -> None:
        self.raw = Raw(raw_root)
        self._labels: np.ndarray | None = None

    def label(self, i: int) -> int:
        if self._labels is None:
            self._labels = self.raw.labels()
        return int(self._labels[i])

    def __call__(self, i: int) -> dict:
        from PIL import Image

        return {"image": Image.open(self.raw.image_path(i)), "label": self.label(i)}


class TokenDocument:
    """Input ``d`` -> document ``d`` of the token stream as a 1-D int32 numpy array."""

    def __init__(self, raw_root: str) -> None:
        self.raw = Raw(raw_root)
        self._tokens: np.ndarray | None = None
        self._offsets: np.ndarray | None = None

    def num_documents(self) -> int:
        return len(self.raw.doc_offsets()) - 1

    def __call__(self, d: int) -> np.ndarray:
        if self._tokens is None:
            self._tokens, self._offsets = self.raw.tokens(), self.raw.doc_offsets()
        return np.array(self._tokens[self._offsets[d] : self._offsets[d + 1]])


def token_blocks(docs: TokenDocument, block_size: int) -> Iterator[np.ndarray]:
    """Concatenate the documents and cut ``block_size`` blocks (llm-foundry's ConcatTokensDataset style; the
    tail is dropped), for the peers that store pre-cut blocks as samples."""
    buffer = np.empty(0, np.int32)
    for d in range(docs.num_documents()):
        buffer = np.concatenate([buffer, docs(d)])
        n = len(buffer) // block_size
        for k in range(n):
            yield buffer[k * block_size : (k + 1) * block_size]
        buffer = buffer[n * block_size :]
