"""``walk``: list a large folder tree with several threads, as litdata's ``walk`` does.

Building ``inputs`` for ``optimize`` often starts with listing millions of files on a network drive, where
every directory listing is a slow round trip; listing many directories at once hides the latency. Like
LitData's, it yields ``(folder, subfolders, filenames)`` triples as ``os.walk`` does, but not in depth-first
order (as soon as each listing arrives). Unlike LitData's it also lists fsspec URLs (``s3://bucket/prefix``).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any


class walk:  # noqa: N801 - LitData's name (a class used as a function)
    """Iterate over ``(folder, subfolders, filenames)`` for ``folder`` and every folder below it."""

    def __init__(
        self,
        folder: str | os.PathLike,
        max_workers: int | None = os.cpu_count(),
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.folder = os.fspath(folder)
        self.max_workers = max(1, max_workers or 1)
        self.storage_options = dict(storage_options or {})
        self._remote = "://" in self.folder and not self.folder.startswith("file://")
        if not self._remote:
            self.folder = self.folder.removeprefix("file://")
            if not os.path.isdir(self.folder):
                raise NotADirectoryError(f"walk: {self.folder} is not a folder")

    def __iter__(self) -> Iterator[tuple[str, list[str], list[str]]]:
        list_folder = self._list_remote() if self._remote else _list_local
        with ThreadPoolExecutor(
            max_workers=self.max_workers, thread_name_prefix="lit-streaming-walk"
        ) as pool:
            waiting = [self.folder]
            running: set[Future] = set()
            while waiting or running:
                while waiting and len(running) < 2 * self.max_workers:  # bounded: a wide tree stays cheap
                    running.add(pool.submit(list_folder, waiting.pop()))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    folder, folders, files, descend = future.result()
                    waiting.extend(_join(folder, f, self._remote) for f in descend)
                    yield folder, folders, files

    def _list_remote(self) -> Any:
        import fsspec

        fs, _ = fsspec.core.url_to_fs(self.folder, **self.storage_options)
        protocol = self.folder.split("://", 1)[0]

        def list_folder(folder: str) -> tuple[str, list[str], list[str], list[str]]:
            folders, files = [], []
            for entry in fs.ls(folder, detail=True):
                name = posixpath.basename(entry["name"].rstrip("/"))
                (folders if entry["type"] == "directory" else files).append(name)
            url = folder if "://" in folder else f"{protocol}://{folder}"
            return url, sorted(folders), sorted(files), sorted(folders)

        return list_folder


def _list_local(folder: str) -> tuple[str, list[str], list[str], list[str]]:
    """Like one step of ``os.walk``: links to folders are listed as folders but not descended into (no
    cycles)."""
    folders, files, descend = [], [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                folders.append(entry.name)
                if not entry.is_symlink():
                    descend.append(entry.name)
            else:
                files.append(entry.name)
    return folder, sorted(folders), sorted(files), sorted(descend)


def _join(folder: str, name: str, remote: bool) -> str:
    return posixpath.join(folder, name) if remote else os.path.join(folder, name)
