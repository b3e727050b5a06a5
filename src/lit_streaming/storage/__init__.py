"""Where chunk bytes come from. Every source hands the reader a local file path it can mmap."""

from lit_streaming.storage.source import DatasetSource, LocalSource, open_source

__all__ = ["DatasetSource", "LocalSource", "open_source"]
