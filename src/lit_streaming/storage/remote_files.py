"""A dataset's remote folder, read through fsspec with per-dataset ``storage_options`` and bounded retries.

The filesystem object is created lazily in each process (never shared between datasets: fsspec's instance
cache is skipped) and dropped when pickled, so DataLoader workers, forked or spawned, build their own client.
"""

from __future__ import annotations

import os
import posixpath
import random
from typing import Any

import fsspec

from lit_streaming.engine.per_process import PerProcess
from lit_streaming.formats.base import ShardEntry
from lit_streaming.storage.errors import ChunkIntegrityError
from lit_streaming.storage.integrity import verify_file
from lit_streaming.storage.local_files import check_local_file
from lit_streaming.storage.retry import call_with_retries, logger
from lit_streaming.storage.settings import StorageSettings
from lit_streaming.storage.transfer import is_async, transfer

LOCAL_PREFIX = "local:"


class RemoteFiles:
    """Reads ``index.json`` and downloads chunks of the dataset at ``url``; every request is retried."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None, settings: StorageSettings) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.settings = settings
        self._fs: PerProcess[tuple[fsspec.AbstractFileSystem, str]] = PerProcess()
        self._rng = random.Random()
        self._inherited: list[fsspec.AbstractFileSystem] = []

    def url_of(self, name: str) -> str:
        return f"{self.url}/{name}"

    def filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """This process's filesystem object and the dataset's root path in it."""
        made = self._fs.get()
        if made is None:
            inherited = self._fs.inherited()
            if inherited is not None:
                # Inherited through fork: the client belongs to the parent's event loop, and collecting it here
                # would run its finalizer against that dead loop (asyncio errors in every worker). Keep it.
                self._inherited.append(inherited[0])
            if self.url.startswith(LOCAL_PREFIX):
                fs = fsspec.filesystem("file")
                root = os.path.abspath(os.path.expanduser(self.url[len(LOCAL_PREFIX) :]))
            else:
                fs, root = fsspec.core.url_to_fs(self.url, skip_instance_cache=True, **self.storage_options)
            made = self._fs.set((fs, root))
            self._rng = random.Random()  # workers forked from one parent must not retry in lockstep
        return made

    def _path(self, name: str) -> str:
        fs, root = self.filesystem()
        return posixpath.join(root, name) if fs.sep == "/" else os.path.join(root, name)

    def read_bytes(self, name: str) -> bytes:
        fs, _ = self.filesystem()
        path, url = self._path(name), self.url_of(name)
        if not is_async(fs):
            self._check_local(path, url)
            return call_with_retries(lambda: fs.cat_file(path), url, self.settings, self._rng)

        def attempt() -> bytes:
            parts: list[bytes] = []
            transfer(fs, path, url, self.settings, parts.append)
            return b"".join(parts)

        return call_with_retries(attempt, url, self.settings, self._rng)

    def _check_local(self, path: str, url: str) -> None:
        """``local:`` folders: refuse symlinks out of the folder and FIFOs before copying (see local_files)."""
        if self.url.startswith(LOCAL_PREFIX) and os.path.lexists(path):
            check_local_file(self.filesystem()[1], path, url)

    def _get_file(self, fs: fsspec.AbstractFileSystem, path: str, url: str, dest: str) -> None:
        """One download attempt into ``dest`` (rewritten from the start), bounded in time on remote stores."""
        if not is_async(fs):
            self._check_local(path, url)
            fs.get_file(path, dest)
            return
        with open(dest, "wb") as f:
            transfer(fs, path, url, self.settings, f.write)

    def list_files(self) -> dict[str, int]:
        """Files directly under the dataset URL and their sizes (``{}`` when nothing is there)."""
        fs, root = self.filesystem()
        try:
            found = call_with_retries(lambda: fs.ls(root, detail=True), self.url, self.settings, self._rng)
        except FileNotFoundError:
            return {}
        return {
            posixpath.basename(str(info["name"]).rstrip("/")): int(info.get("size") or 0)
            for info in found
            if info.get("type") == "file"
        }

    def download(self, entry: ShardEntry, dest: str, label: str) -> None:
        """Copy the chunk to ``dest`` and verify its size and checksum; a failed check downloads once more
        (damage in transit) before the chunk is reported corrupt."""
        fs, _ = self.filesystem()
        path, url = self._path(entry.filename), self.url_of(entry.filename)
        for attempt in range(1, self.settings.integrity_attempts + 1):
            call_with_retries(lambda: self._get_file(fs, path, url, dest), url, self.settings, self._rng)
            try:
                verify_file(dest, entry, label)
                return
            except ChunkIntegrityError as err:
                if attempt == self.settings.integrity_attempts:
                    raise
                logger.warning("Downloading %s again: %s", url, err)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_inherited"] = []  # ``_fs`` pickles empty: each process makes its own client
        return state
