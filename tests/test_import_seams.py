"""What importing each part costs: the writer never loads the read side's dataset/loader/cache modules, the
pure parts (sampling, the on-disk format) load without torch, and every public name still resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

READ_SIDE = (
    "lit_streaming.dataset",
    "lit_streaming.dataloader",
    "lit_streaming.datamodule",
    "lit_streaming.combined",
    "lit_streaming.engine.chunks",
    "lit_streaming.storage",
)


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


def test_writer_does_not_import_the_read_side():
    loaded = _modules_after("import lit_streaming_writer")
    bad = sorted(m for m in loaded if m.startswith(READ_SIDE))
    assert not bad, bad
    assert not any(m.split(".")[0] in ("lightning", "pytorch_lightning") for m in loaded)


@pytest.mark.parametrize("package", ["lit_streaming.sampling", "lit_streaming.format"])
def test_pure_parts_import_without_torch(package):
    loaded = _modules_after(f"import {package}")
    assert "torch" not in loaded
    assert not any(m.startswith(READ_SIDE) for m in loaded)


def test_package_import_is_lazy_and_every_name_resolves():
    assert "torch" not in _modules_after("import lit_streaming")
    import lit_streaming

    for name in lit_streaming.__all__:
        assert getattr(lit_streaming, name) is not None, name
    assert set(lit_streaming.__all__) <= set(dir(lit_streaming))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lit_streaming.nope  # noqa: B018


def test_submodules_resolve_as_attributes():
    code = "import lit_streaming; print(lit_streaming.item_loaders.TokensLoader.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "TokensLoader", done.stderr[-2000:]
