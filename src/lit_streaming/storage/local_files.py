"""Reading a dataset folder on a local file system without leaving it: the checks every local read makes.

An index's filenames are checked lexically (``check_relative_filename``), but a symlink inside the folder can
still point anywhere (``chunk-0-0.bin -> /home/user/.ssh/id_rsa``), and a FIFO or device named like a chunk
blocks ``open()`` forever. Both are refused before a file is opened, read in place or copied into the cache.
"""

from __future__ import annotations

import os
import stat

from lit_streaming.storage.errors import UnsafeFileError


def check_local_file(root: str, path: str, what: str) -> None:
    """Raise ``UnsafeFileError`` naming ``what`` unless ``path`` resolves to a regular file inside ``root``.
    A missing file raises ``FileNotFoundError`` (the callers report it in their own words)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnsafeFileError(
            f"{what}: {path} resolves to {real}, outside the dataset folder {root} (a symlink); refusing to read it"
        )
    mode = os.stat(real).st_mode
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise UnsafeFileError(f"{what}: {path} is {kind}; refusing to read it as a dataset file")
