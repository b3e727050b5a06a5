"""The ``lit-streaming`` command: every config in configs/ parses and round-trips through ``--print_config``,
and the demo, token and mixture configs train for a few steps on small data generated where they look for it
(``.demo/...`` under the working directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from demo import shapes, tokens
from lit_streaming.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory holding small versions of the demo datasets at the configs' paths."""
    root = tmp_path_factory.mktemp("cli")
    shapes.prepare(str(root / ".demo" / "shapes"), train=96, val=30, num_workers=1)
    tokens.prepare(str(root / ".demo" / "tokens"), documents=24, chunk_tokens=2048)
    return root


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    """LightningCLI(args=...) warns when sys.argv (pytest's here) holds arguments too."""
    monkeypatch.setattr(sys, "argv", ["lit-streaming"])


@pytest.fixture()
def in_workdir(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|num_workers|LeafSpec).*")
        yield workdir


def _print_config(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main(["fit", *args, "--print_config"])
    assert done.value.code in (0, None)
    return capsys.readouterr().out


def test_configs_exist():
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "tokens.yaml", "mixture.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_print_config_round_trips(config, tmp_path, capsys):
    printed = _print_config(capsys, "--config", str(config))
    parsed = yaml.safe_load(printed)
    assert parsed["data"]["train"], "every config trains on something"
    assert parsed["model"]["class_path"].startswith("demo.models.")
    again = tmp_path / "printed.yaml"
    again.write_text(printed)
    assert _print_config(capsys, "--config", str(again)) == printed


def test_mixture_config_builds_a_weighted_mix(capsys):
    parsed = yaml.safe_load(_print_config(capsys, "--config", str(CONFIG_DIR / "mixture.yaml")))
    assert len(parsed["data"]["train"]) == 2 and parsed["data"]["weights"] == [0.7, 0.3]
    assert parsed["data"]["block_size"]


def test_demo_config_trains_and_validates(in_workdir, capsys):
    args = ["fit", "--config", str(CONFIG_DIR / "demo.yaml"), *QUIET]
    args += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--data.batch_size", "16"]
    assert main(args) == 0
    assert "validation accuracy" in capsys.readouterr().out  # ShapesClassifier reports after validation


def test_token_config_trains_checkpoints_and_resumes(in_workdir, tmp_path):
    """tokens.yaml as documented: a run that writes checkpoints, then one continuing from ``last.ckpt``."""
    ckpt_dir = in_workdir / ".demo" / "checkpoints" / "tokens"
    every_2 = tmp_path / "every2.yaml"
    every_2.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [
                        {
                            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                            "init_args": {
                                "dirpath": str(ckpt_dir),
                                "every_n_train_steps": 2,
                                "save_last": True,
                            },
                        }
                    ]
                }
            }
        )
    )
    config = ["--config", str(CONFIG_DIR / "tokens.yaml"), "--config", str(every_2), *QUIET]
    small = ["--data.batch_size", "8", "--data.num_workers", "0", "--model.dim", "16"]
    assert main(["fit", *config, *small, "--trainer.max_steps", "4"]) == 0
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    assert last["StreamingDataModule"]["train_loader"]["consumed"] == 4 * 8
    assert (
        main(["fit", *config, *small, "--trainer.max_steps", "6", "--ckpt_path", str(ckpt_dir / "last.ckpt")])
        == 0
    )
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 6


def test_mixture_config_trains(in_workdir):
    args = ["fit", "--config", str(CONFIG_DIR / "mixture.yaml"), *QUIET]
    assert main([*args, "--trainer.max_steps", "3", "--data.batch_size", "8", "--model.dim", "16"]) == 0


def test_inspect_and_verify(in_workdir, capsys):
    assert main(["inspect", ".demo/shapes/train"]) == 0
    assert '"items": 96' in capsys.readouterr().out
    assert main(["verify", ".demo/shapes/train"]) == 0
    assert "96 samples" in capsys.readouterr().out
    assert main(["inspect"]) == 2


def test_console_script(in_workdir):
    """The installed entry point, as a user runs it (``make demo`` does the same with the full data)."""
    exe = Path(sys.executable).parent / "lit-streaming"
    args = ["fit", "--config", str(CONFIG_DIR / "demo.yaml"), "--trainer.max_steps", "2", *QUIET]
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO))  # demo/ is not installed
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max_steps=2" in done.stdout + done.stderr
