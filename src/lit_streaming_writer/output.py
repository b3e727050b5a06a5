"""The folder a job writes into: a local path (possibly a shared network drive) or any fsspec URL (``s3://``).

Workers produce files on local disk first and then publish them here: on a local folder publishing is a rename
(the writer already wrote in place, so there is nothing to copy); on a remote store it is one upload per file,
done as soon as the file is finished. Small metadata files (indexes, checkpoints) are written whole or not at
all: temp file + rename locally, a single PUT remotely.

Every remote request is retried with backoff on transient failures (5xx, resets, timeouts), exactly as the
reader's are (``lit_streaming.storage.retry``): one 500 must not fail an hours-long job when the client's own
retries are off or spent. Every request is idempotent (a PUT of the same bytes, a listing, a delete).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import random
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import fsspec

from lit_streaming.engine.per_process import PerProcess
from lit_streaming.format.index import write_text_atomic

if TYPE_CHECKING:  # imported where used: importing the writer must not load the read side's storage package
    from lit_streaming.storage.settings import StorageSettings

T = TypeVar("T")


class Output:
    """A dataset folder addressed by a local path, ``file://`` URL or remote URL, plus fsspec options."""

    def __init__(
        self,
        url: str | os.PathLike,
        storage_options: dict[str, Any] | None = None,
        settings: StorageSettings | None = None,
    ) -> None:
        url = os.fspath(url)
        self._settings = settings
        self._rng = random.Random()
        self.is_local = "://" not in url or url.startswith("file://")
        self.storage_options = dict(storage_options or {})
        self._fs: PerProcess[Any] = PerProcess()
        if self.is_local:
            self.root = os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
            self.url = self.root
        else:
            protocol, _ = fsspec.core.split_protocol(url)
            self.root = fsspec.get_filesystem_class(protocol)._strip_protocol(url).rstrip("/")
            self.url = url.rstrip("/")

    @property
    def fs(self) -> Any:
        """The fsspec file system, made in the process that uses it: fsspec instances are not fork-safe."""
        fs = self._fs.get()
        if fs is None:
            fs = self._fs.set(
                fsspec.filesystem(fsspec.core.split_protocol(self.url)[0], **self.storage_options)
            )
            self._rng = random.Random()  # forked workers must not retry in lockstep
        return fs

    def _remote(self, what: str, request: Callable[[], T], action: str = "read") -> T:
        """One remote request about ``what`` (a path), retried on transient failures; past the retry bound a
        ``DownloadError`` (an ``OSError``) naming the URL; a missing file is a ``FileNotFoundError``."""
        from lit_streaming.storage.retry import call_with_retries

        return call_with_retries(request, f"{self.url} ({what})", self.settings, self._rng, action)

    @property
    def settings(self) -> StorageSettings:
        """Retry settings; the storage package is loaded only once a remote request needs them."""
        if self._settings is None:
            from lit_streaming.storage.settings import StorageSettings

            self._settings = StorageSettings()
        return self._settings

    def path(self, name: str) -> str:
        return os.path.join(self.root, name) if self.is_local else posixpath.join(self.root, name)

    def ensure(self) -> None:
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)
        else:
            self._remote("mkdir", lambda: self.fs.makedirs(self.root, exist_ok=True), "create")

    def names(self, folder: str = "") -> list[str]:
        """File names directly in the folder (or a subfolder); ``[]`` when it does not exist."""
        where = self.path(folder) if folder else self.root
        if self.is_local:
            if not os.path.isdir(where):
                return []
            return sorted(e.name for e in os.scandir(where) if e.is_file())
        self.fs.invalidate_cache(where)  # other processes write here: never trust a cached listing
        try:
            entries = self._remote(f"list {where}", lambda: self.fs.ls(where, detail=True))
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "file")

    def entries(self) -> list[str]:
        """Names of everything (files and folders) directly in the folder."""
        if self.is_local:
            return sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []
        self.fs.invalidate_cache(self.root)
        try:
            listed = self._remote("list", lambda: self.fs.ls(self.root, detail=False))
            return sorted(posixpath.basename(p.rstrip("/")) for p in listed)
        except FileNotFoundError:
            return []

    def read_text(self, name: str) -> str | None:
        """The file's text, or ``None`` when it does not exist."""
        try:
            if self.is_local:
                with open(self.path(name)) as f:
                    return f.read()
            self.fs.invalidate_cache(self.path(name))
            return self._remote(name, lambda: self.fs.cat_file(self.path(name))).decode()
        except FileNotFoundError:
            return None

    def write_text(self, name: str, text: str) -> None:
        """Publish a small file atomically (readers see the old version or the new one, never a part)."""
        if self.is_local:
            os.makedirs(os.path.dirname(self.path(name)), exist_ok=True)
            write_text_atomic(self.path(name), text)
        else:
            data = text.encode()
            self._remote(name, lambda: self.fs.pipe_file(self.path(name), data), "write")

    def remove(self, names: list[str]) -> None:
        """Delete files (missing ones are fine: a crashed run may have left some and not others)."""
        if not names:
            return
        if self.is_local:
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path(name))
        else:
            paths = [self.path(n) for n in names]
            with contextlib.suppress(FileNotFoundError):
                self._remote(f"{len(paths)} files", lambda: self.fs.rm(paths), "delete")

    def remove_folder(self, folder: str) -> None:
        if self.is_local:
            shutil.rmtree(self.path(folder), ignore_errors=True)
        elif self._remote(folder, lambda: self.fs.exists(self.path(folder))):
            with contextlib.suppress(FileNotFoundError):
                self._remote(folder, lambda: self.fs.rm(self.path(folder), recursive=True), "delete")

    def publish(self, local_path: str, name: str) -> None:
        """Move a finished local file to ``name`` (a relative path); the local file is gone afterwards."""
        target = self.path(name)
        if self.is_local:
            if os.path.abspath(local_path) != target:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(local_path, target)
            return
        self._remote(name, lambda: self.fs.put_file(local_path, target), "upload")
        os.remove(local_path)

    def staging_dir(self, folder: str) -> tuple[str, bool]:
        """A local folder for files before they are published, and whether the caller must delete it.

        Local outputs stage inside the output folder (same file system, so publishing is a rename); remote
        outputs stage in a fresh temp folder.
        """
        if self.is_local:
            path = self.path(folder) if folder else self.root
            os.makedirs(path, exist_ok=True)
            return path, False
        return tempfile.mkdtemp(prefix="lit-streaming-writer-"), True
