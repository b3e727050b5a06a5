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
    assert parsed["data"]["dataset"]["block_size"] == 65


def test_dataset_options_are_nested_keys(capsys):
    """A dataset option is one nested key (``--data.dataset.shuffle_window``), passed through to every dataset."""
    printed = _print_config(
        capsys, "--config", str(CONFIG_DIR / "demo.yaml"), "--data.dataset.shuffle_window", "5"
    )
    options = yaml.safe_load(printed)["data"]["dataset"]
    assert options["shuffle_window"] == 5 and options["shuffle"] is True and options["seed"] == 42


def test_storage_settings_are_nested_keys(tmp_path, capsys):
    """``data.dataset.storage_settings.*`` reaches StorageSettings: validated, printed, and read back."""
    args = ["--config", str(CONFIG_DIR / "demo.yaml"), "--data.dataset.storage_settings.attempts", "3"]
    printed = _print_config(capsys, *args, "--data.dataset.storage_settings.prefetch_chunks", "2")
    settings = yaml.safe_load(printed)["data"]["dataset"]["storage_settings"]
    assert (
        settings["attempts"] == 3
        and settings["prefetch_chunks"] == 2
        and settings["stall_timeout_s"] == 120.0
    )
    again = tmp_path / "printed.yaml"
    again.write_text(printed)
    assert _print_config(capsys, "--config", str(again)) == printed


def test_demo_config_trains_and_validates(in_workdir, capsys):
    args = ["fit", "--config", str(CONFIG_DIR / "demo.yaml"), *QUIET]
    args += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--data.batch_size", "16"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(args) == 0  # demo.yaml streams with 2 workers
    assert "validation accuracy" in capsys.readouterr().out  # ShapesClassifier reports after validation
    assert not [w for w in seen if "could be inaccurate" in str(w.message)], "our __len__ is exact"


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


# ---- dataset commands: --help, token datasets, one-line errors, no Lightning ---------------------------------


@pytest.mark.parametrize("command", ["inspect", "verify", "index"])
def test_every_dataset_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lit-streaming {command}") and "_OR_URL" in out


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "inspect", "verify", "index"):
        assert f"  {command} " in out


def test_verify_token_dataset(in_workdir, capsys):
    """Token datasets: the block size comes from --block-size, else every chunk yields at least one block."""
    assert main(["verify", ".demo/tokens/prose"]) == 0
    assert "token blocks of" in capsys.readouterr().out
    assert main(["verify", ".demo/tokens/prose", "--block-size", "64"]) == 0
    assert "token blocks of 64" in capsys.readouterr().out
    assert main(["verify", ".demo/tokens/prose", "--block-size", "0"]) == 2  # argparse: a usage error
    assert main(["verify", ".demo/shapes/train", "--block-size", "8"]) == 1  # not a token dataset
    assert "applies to token datasets" in capsys.readouterr().err


def _record(i: int) -> dict:
    return {"id": i, "text": f"record {i}" * 20}


def test_verify_names_every_corrupt_chunk_in_one_line_each(tmp_path, capsys):
    import json

    from lit_streaming_writer import optimize

    copy = tmp_path / "broken"
    optimize(_record, list(range(12)), str(copy), chunk_size=4, num_workers=1, verbose=False)
    names = [c["filename"] for c in json.loads((copy / "index.json").read_text())["chunks"]]
    assert len(names) == 3
    for name in (names[0], names[-1]):
        data = bytearray((copy / name).read_bytes())
        data[-8:] = b"\xff" * 8
        (copy / name).write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3, err  # one line per corrupt chunk, then the summary
    assert names[0] in err[0] and names[-1] in err[1]
    assert "2 of 3 chunks" in err[2] and "Traceback" not in "\n".join(err)


def test_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    for command in ("inspect", "verify"):
        assert main([command, str(tmp_path / "nothing")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"lit-streaming {command}: error:"), err


def test_dataset_commands_do_not_import_lightning(workdir):
    code = (
        "import sys; from lit_streaming.cli import main; "
        f"assert main(['inspect', {str(workdir / '.demo' / 'shapes' / 'train')!r}]) == 0; "
        f"assert main(['verify', {str(workdir / '.demo' / 'shapes' / 'train')!r}]) == 0; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')); "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
