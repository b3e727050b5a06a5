"""Train with Lightning (README section 5): ``StreamingDataModule`` feeds ``Trainer.fit``; checkpoints carry the
loader's exact position, so a stopped run continues mid-epoch with ``ckpt_path=``.

    python examples/lightning_train.py WORKDIR      # a small shapes image set, a CNN, 2 CPU epochs
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_streaming.datamodule import StreamingDataModule

# The demo's data and model live in the repository's demo/ package, which is not installed with the library.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from demo.models import ShapesClassifier  # noqa: E402
from demo.shapes import prepare  # noqa: E402


def make_trainer(checkpoints, **kwargs):
    return L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=5, save_last=True)],
        **kwargs,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    args = parser.parse_args()
    train_dir, val_dir = prepare(os.path.join(args.workdir, "shapes"), train=320, val=96, num_workers=1)
    checkpoints = os.path.join(args.workdir, "checkpoints")
    shutil.rmtree(checkpoints, ignore_errors=True)

    dm = StreamingDataModule(train=train_dir, val=val_dir, batch_size=32, num_workers=2)
    L.seed_everything(0)
    # A first run "preempted" after 8 steps (epoch 0 has 10): the last checkpoint is from step 5.
    make_trainer(checkpoints, max_steps=8).fit(ShapesClassifier(), datamodule=dm)

    # A new process would build everything again; the checkpoint restores the model, the optimizer and
    # the data position: batches 6.. of epoch 0, then epoch 1 with its own shuffle.
    dm = StreamingDataModule(train=train_dir, val=val_dir, batch_size=32, num_workers=2)
    model = ShapesClassifier()
    trainer = make_trainer(checkpoints)
    trainer.fit(model, datamodule=dm, ckpt_path=os.path.join(checkpoints, "last.ckpt"))
    assert trainer.global_step == 2 * len(trainer.train_dataloader), trainer.global_step
    print(
        f"resumed at step 5, finished at step {trainer.global_step}; validation accuracy {model.last_val_acc:.1%}"
    )
