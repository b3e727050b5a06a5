"""The loopback S3 server for P4: moto's ThreadedMotoServer on 127.0.0.1 (as tests/conftest.py), and
uploads of each library's cached image dataset."""

from __future__ import annotations

import logging
import os
import socket

BUCKET = "bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackS3:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = _free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackS3:
        self.server.start()
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def upload(self, local_dir: str, prefix: str) -> tuple[int, int]:
        """Upload every file under ``local_dir`` to ``s3://bench/<prefix>/``; returns (files, bytes)."""
        client = self.client()
        files = size = 0
        for root, _, names in os.walk(local_dir):
            for name in sorted(names):
                path = os.path.join(root, name)
                key = f"{prefix}/{os.path.relpath(path, local_dir)}"
                client.upload_file(path, BUCKET, key)
                files, size = files + 1, size + os.path.getsize(path)
        return files, size

    def env(self) -> dict[str, str]:
        """Environment for a reader process: credentials plus the endpoint under the names boto3
        (``AWS_ENDPOINT_URL``, LitData's fallback) and MosaicML Streaming (``S3_ENDPOINT_URL``) read."""
        return dict(CREDENTIALS, AWS_ENDPOINT_URL=self.endpoint, S3_ENDPOINT_URL=self.endpoint)

    def spec(self, lib: str, cache_dir: str) -> dict[str, str]:
        return dict(
            endpoint=self.endpoint,
            url=f"s3://{BUCKET}/{lib}/images",
            http_prefix=f"{self.endpoint}/{BUCKET}/{lib}/images",
            cache_dir=cache_dir,
        )
