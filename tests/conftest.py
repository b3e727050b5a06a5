"""Shared fixtures. S3 tests talk to a real S3-protocol server (moto's server mode) on loopback; remote-path
unit tests use a ``memory://`` location (fsspec's in-process file system)."""

from __future__ import annotations

import socket
import uuid

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket; yields (bucket_url, storage_options) for fsspec/s3fs."""
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, key="testing", secret="testing")
    fs.mkdir(name)
    yield f"s3://{name}", options


@pytest.fixture()
def memory_url():
    """A fresh ``memory://`` folder URL, removed afterwards."""
    import fsspec

    root = f"/lit-streaming-tests/{uuid.uuid4().hex[:12]}"
    yield f"memory:/{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)
