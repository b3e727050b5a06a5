"""The writer examples, map and the S3 example run to completion (S3 against the loopback moto server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_map_resize_images(tmp_path):
    assert "resized 40 images" in _run("map_resize_images.py", str(tmp_path))


def test_writer_single_machine(tmp_path):
    _run("writer_single_machine.py", str(tmp_path / "out"))
    assert (tmp_path / "out").exists()


def test_stream_from_s3(s3_bucket):
    url, options = s3_bucket
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    out = _run("stream_from_s3.py", f"{url}/dataset", "--endpoint-url", options["endpoint_url"], env=env)
    assert "streamed 2000 samples" in out
