"""Helpers shared by the storage tests and the S3 integration tests: small datasets with known samples, upload
to an fsspec URL, a fault-injecting HTTP proxy for the S3 server, and a cache-size monitor."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fsspec

from lit_streaming.storage.cache_entry import META, hold_lock
from lit_streaming_writer import optimize


# ---- datasets ------------------------------------------------------------------------------------------------
def payload(i: int, size: int) -> bytes:
    """Sample ``i``'s bytes: distinct per sample and per version salt, cheap to recompute."""
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Sample:
    """``fn`` for optimize (a class so it pickles): sample i is {"i": i, "x": payload, "tag": tag}."""

    def __init__(self, size: int, tag: str) -> None:
        self.size = size
        self.tag = tag

    def __call__(self, i: int) -> dict[str, Any]:
        return {"i": i, "x": payload(i, self.size), "tag": self.tag}


def write_dataset(path: Path, n: int, chunk_size: int, size: int = 200, tag: str = "v1") -> Path:
    optimize(
        Sample(size, tag), list(range(n)), str(path), chunk_size=chunk_size, num_workers=1, mode="overwrite"
    )
    return path


def expected_sample(i: int, size: int = 200, tag: str = "v1") -> dict[str, Any]:
    return Sample(size, tag)(i)


def upload(local_dir: Path, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Copy a dataset folder to ``url`` (replacing what is there)."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if fs.exists(root):
        fs.rm(root, recursive=True)
    for name in sorted(os.listdir(local_dir)):
        fs.put_file(str(local_dir / name), f"{root}/{name}")


def chunk_names(local_dir: Path) -> list[str]:
    return [c["filename"] for c in json.loads((local_dir / "index.json").read_text())["chunks"]]


def rewrite_index(local_dir: Path, edit) -> None:
    """Apply ``edit(index_dict)`` to a dataset's index.json."""
    index = json.loads((local_dir / "index.json").read_text())
    edit(index)
    (local_dir / "index.json").write_text(json.dumps(index))


def set_checksum(local_dir: Path, name: str) -> None:
    """Record the current bytes of chunk ``name`` in index.json (to get a forged chunk past the CRC check)."""
    data = (local_dir / name).read_bytes()

    def edit(index: dict) -> None:
        for chunk in index["chunks"]:
            if chunk["filename"] == name:
                chunk["checksum"] = f"crc32:{zlib.crc32(data) & 0xFFFFFFFF:08x}"
                chunk["file_bytes"] = len(data)

    rewrite_index(local_dir, edit)


def forge_offsets(chunk: Path) -> None:
    """Point the first item's end offset past the end of the file (checksum left stale)."""
    data = bytearray(chunk.read_bytes())
    struct.pack_into("<I", data, 8, len(data) + 1000)
    chunk.write_bytes(bytes(data))


def flip_byte(chunk: Path, offset: int = -5) -> None:
    data = bytearray(chunk.read_bytes())
    data[offset] ^= 0xFF
    chunk.write_bytes(bytes(data))


# ---- cache size ----------------------------------------------------------------------------------------------
def tree_bytes(root: str) -> int:
    """Apparent size of every file under ``root`` (files vanishing mid-walk are skipped)."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total


class CacheMonitor:
    """Samples the size of a folder from a thread until stopped; ``peak`` is the largest size seen.

    A plain walk is not a snapshot: a chunk evicted after the walk counted it and another published before
    the walk reaches it are both counted. Given a cache entry, each walk holds the entry's bookkeeping lock,
    under which every chunk is published and evicted, so the sizes seen are ones the disk really held.
    """

    def __init__(self, root: str, entry: str | None = None, interval_s: float = 0.005) -> None:
        self.root = root
        self.lock = None if entry is None else os.path.join(entry, META, "lock")
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _measure(self) -> int:
        if self.lock is None:
            return tree_bytes(self.root)
        with hold_lock(self.lock, 10, "the monitored cache entry"):
            return tree_bytes(self.root)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._measure())
            self.samples += 1
            time.sleep(self.interval_s)

    def __enter__(self) -> CacheMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- fault-injecting proxy -----------------------------------------------------------------------------------
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
}
_S3_ERROR = b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>injected</Message></Error>"


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up on a delayed or cut response is expected; anything else is reported."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of an S3 server that injects faults into a share of requests.

    Fault kinds: ``500`` (an S3 InternalError), ``reset`` (connection reset before any response), ``cut`` (the
    response headers and half the body, then a reset), ``delay`` (answered correctly after ``delay_s``) and
    ``trickle`` (the right headers, then the body one byte every ``trickle_s``, until the client hangs up).
    Only paths containing ``only_paths_containing`` are faulted, at most ``max_faults`` times. ``requests``
    counts requests per (method, path); ``faults`` counts injected faults per kind.
    """

    def __init__(
        self,
        target: str,
        rate: float = 0.1,
        kinds: tuple[str, ...] = ("500", "reset", "cut", "delay"),
        seed: int = 0,
        delay_s: float = 0.2,
        trickle_s: float = 0.5,
        only_paths_containing: str = "",
        max_faults: int | None = None,
    ) -> None:
        self.target = urlsplit(target)
        self.rate = rate
        self.kinds = kinds
        self.delay_s = delay_s
        self.trickle_s = trickle_s
        self._closing = threading.Event()
        self.only = only_paths_containing
        self.max_faults = max_faults
        self.requests: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = _ProxyServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests[(method, path.split("?")[0])] += 1
            draw = self._rng.random()
            exhausted = self.max_faults is not None and sum(self.faults.values()) >= self.max_faults
            if self.only not in path or draw >= self.rate or exhausted:
                return None
            kind = self.kinds[int(draw / self.rate * len(self.kinds))]
            self.faults[kind] += 1
            return kind

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._decide(self.command, self.path)
                if fault == "reset":
                    return self._reset()
                if fault == "500":
                    return self._reply(500, [("Content-Type", "application/xml")], _S3_ERROR)
                if fault == "delay":
                    time.sleep(proxy.delay_s)
                status, headers, data = self._upstream(body)
                if fault == "trickle" and self.command == "GET":
                    return self._trickle(status, headers, data)
                if fault == "cut" and len(data) > 1:
                    self._reply(status, headers, data[: len(data) // 2], declared=len(data))
                    return self._reset()
                self._reply(status, headers, data)

            def _upstream(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=30)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for key, value in self.headers.items():
                        if key.lower() not in _HOP_BY_HOP:
                            conn.putheader(key, value)
                    conn.endheaders(body)
                    response = conn.getresponse()
                    data = response.read()
                    headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
                    return response.status, headers, data
                finally:
                    conn.close()

            def _reply(
                self, status: int, headers: list[tuple[str, str]], data: bytes, declared: int | None = None
            ) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() != "content-length" or self.command == "HEAD":
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(declared if declared is not None else len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self.end_headers()
                self.wfile.flush()

            def _trickle(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.flush()
                for k in range(len(data)):
                    if proxy._closing.wait(proxy.trickle_s):
                        return self._reset()
                    self.wfile.write(data[k : k + 1])
                    self.wfile.flush()

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Handler
