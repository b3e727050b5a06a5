"""Shard names of every format get the same escape checks as LitData chunk names, percent-decoding included."""

from __future__ import annotations

import pytest

from lit_streaming.formats.base import FormatError, check_relative_name


@pytest.mark.parametrize(
    "name",
    [
        "../secret.bin",
        "/etc/passwd",
        "%2e%2e/secret.bin",
        "%252e%252e/x",
        "..%2fsecret",
        "a/../../b",
        "s3://x",
    ],
)
def test_escaping_shard_names_are_refused(name):
    with pytest.raises(FormatError, match="escapes the dataset folder"):
        check_relative_name(name, "index.json")


@pytest.mark.parametrize("name", ["shard.00000.mds", "train/shard-1.tar", "a/b/c.parquet", "100%.tar"])
def test_plain_shard_names_pass(name):
    assert check_relative_name(name, "index.json") == name
