"""Segmentation as a user runs it: the README commands, artefacts, real-ADE20K path, errors, learning."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from selfsup.config import instantiate
from selfsup.data.embedded.ade20k import ensure_ade20k
from selfsup.training.checkpoint import read_checkpoint
from tests.helpers import run_command, run_train, summary_of
from tests.test_config import compose

PRETRAIN = "python tools/train.py experiment=ijepa run_name=cpu"
LINEAR = "python tools/train.py experiment=seg_linear backbone.checkpoint=outputs/ijepa/cpu/checkpoints/last.ckpt"
UPERNET = "python tools/train.py experiment=seg_upernet backbone.checkpoint=outputs/ijepa/cpu/checkpoints/last.ckpt"
UPERNET_PARTIAL = "python tools/train.py experiment=seg_upernet model.segmentor.encoder.frozen_stages=3 backbone.checkpoint=outputs/ijepa/cpu/checkpoints/last.ckpt"
LINEAR_ADE20K = "python tools/train.py experiment=seg_linear data=ade20k data.root=/datasets/ADEChallengeData2016 backbone.checkpoint=outputs/ijepa/cpu/checkpoints/last.ckpt"
PAPER_UPERNET = "python tools/train.py experiment=seg_upernet_ade20k_vitb16 data.root=/datasets/ADEChallengeData2016 backbone.checkpoint=/checkpoints/ijepa_vitb16.ckpt trainer.devices=8 data.batch_size=2"
PAPER_LINEAR = "python tools/train.py experiment=seg_linear_ade20k_vitb16 data.root=/datasets/ADEChallengeData2016 backbone.checkpoint=/checkpoints/ijepa_vitb16.ckpt"

FAST = ["debug=fast", "data.num_workers=0", "data.persistent_workers=false"]
TINY_ADE20K = [  # the paper recipes' pipeline at toy scale, to run their commands on CPU
    "data.image_size=64", "data.train_transform.scale=[256,64]", "data.val_transform.scale=[256,64]",
    "model.inference.crop_size=64", "model.inference.stride=43", "trainer.devices=1", "data.batch_size=2",
    "trainer.val_check_interval=2", "trainer.max_steps=2", "trainer.limit_val_batches=2", "trainer.precision=32-true",
    "backbone.depth=4", "backbone.embed_dim=96", "backbone.num_heads=3", "backbone.checkpoint=null",
    "model.segmentor.encoder.out_indices=[0,1,2,3]",
    "data.num_workers=0", "data.persistent_workers=false", "trainer.log_every_n_steps=1",
]


def metric(line: str, name: str) -> float:
    match = re.search(rf"{re.escape(name)}=([0-9.eE+-]+|nan)", line)
    assert match, f"{name} not in: {line}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A backbone checkpoint from the CPU I-JEPA recipe (3 steps of it: the pipeline, not the quality)."""
    out = tmp_path_factory.mktemp("pretrain")
    run_command(PRETRAIN, out, FAST)
    return out / "ijepa" / "cpu" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def ade20k_copy(tmp_path_factory) -> Path:
    """The embedded export, standing in for a real ADEChallengeData2016 folder."""
    tmp = tmp_path_factory.mktemp("ade")
    cfg = compose(["experiment=seg_linear"], tmp)
    return ensure_ade20k(tmp / "ADEChallengeData2016", **OmegaConf.to_container(cfg.data.embedded))


def test_linear_run_reports_miou_writes_overlays_and_keeps_the_backbone_frozen(pretrained, tmp_path):
    proc = run_command(LINEAR, tmp_path, [*FAST, f"backbone.checkpoint={pretrained}", "run_name=fast"])
    line = summary_of(proc.stdout)
    for name in ("val/mIoU", "val/mAcc", "val/aAcc", "train/loss"):
        assert 0 <= metric(line, name) <= 100, name
    run_dir = tmp_path / "seg_linear" / "fast"
    overlays = sorted((run_dir / "overlays").glob("step*/ADE_val_*.png"))
    assert len(overlays) == 4 and (run_dir / "overlays" / "legend.png").exists()
    panel = np.asarray(Image.open(overlays[0]))
    assert panel.shape == (96, 3 * 96 + 8, 3)  # image | ground truth | prediction, 4 px gaps
    table = (run_dir / "per_class").glob("step*.csv")
    assert next(table).read_text().splitlines()[1].startswith("circle,")

    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    pre = read_checkpoint(pretrained)["state_dict"]
    backbone = {k.removeprefix("segmentor.encoder.backbone."): v for k, v in ckpt["state_dict"].items() if ".backbone." in k}
    assert backbone and all(torch.equal(v, pre[f"objective.target_encoder.{k}"]) for k, v in backbone.items())


def test_real_ade20k_layout_with_150_classes(ade20k_copy, pretrained, tmp_path):
    proc = run_command(
        LINEAR_ADE20K, tmp_path, [*FAST, f"data.root={ade20k_copy}", f"backbone.checkpoint={pretrained}", "run_name=ade"]
    )
    assert metric(summary_of(proc.stdout), "val/mIoU") >= 0
    config = OmegaConf.load(tmp_path / "seg_linear" / "ade" / "config.yaml")
    assert config.model.num_classes == 150 and config.model.segmentor.decode_head.num_classes == 150
    assert config.data.class_names[0] == "wall" and config.data.image_size == 512


def test_missing_ade20k_folder_is_explained(tmp_path):
    proc = run_train(["experiment=seg_linear", "data=ade20k", f"data.root={tmp_path}/nowhere", *FAST], tmp_path, check=False)
    assert proc.returncode != 0
    assert "ADE20K-format" in proc.stderr and "data=ade20k_embedded" in proc.stderr


# ------------------------------------------------------------------ slow: every README command, learning
@pytest.mark.slow
@pytest.mark.parametrize("command", [UPERNET, UPERNET_PARTIAL])
def test_upernet_commands_run(command, pretrained, tmp_path):
    proc = run_command(command, tmp_path, [*FAST, f"backbone.checkpoint={pretrained}"])
    assert metric(summary_of(proc.stdout), "val/mIoU") >= 0 and "train/loss_aux=" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", [PAPER_UPERNET, PAPER_LINEAR])
def test_paper_recipe_commands_run_at_toy_scale(command, ade20k_copy, tmp_path):
    proc = run_command(command, tmp_path, [f"data.root={ade20k_copy}", *TINY_ADE20K])
    line = summary_of(proc.stdout)
    assert "2 steps" in line and metric(line, "val/mIoU") >= 0


def _untrained_miou(experiment: str, checkpoint: Path, tmp_path: Path) -> float:
    cfg = compose([f"experiment={experiment}", f"backbone.checkpoint={checkpoint}", "data.num_workers=0",
                   "data.persistent_workers=false"], tmp_path)
    OmegaConf.resolve(cfg)
    L.seed_everything(cfg.seed)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=str(tmp_path / "untrained"))
    return trainer.validate(instantiate(cfg.model), datamodule=instantiate(cfg.data), verbose=False)[0]["val/mIoU"]


LEARNING_EPOCHS = {"seg_linear": 4, "seg_upernet": 4}


@pytest.mark.slow
@pytest.mark.parametrize("experiment,command", [("seg_linear", LINEAR), ("seg_upernet", UPERNET)])
def test_a_short_run_clearly_beats_the_untrained_head(experiment, command, tmp_path):
    pre = tmp_path / "pre"
    run_command(PRETRAIN, pre, FAST)  # the CPU I-JEPA recipe's checkpoint (a short run of it)
    checkpoint = pre / "ijepa" / "cpu" / "checkpoints" / "last.ckpt"
    untrained = _untrained_miou(experiment, checkpoint, tmp_path)
    proc = run_command(command, tmp_path, [f"backbone.checkpoint={checkpoint}", f"trainer.max_epochs={LEARNING_EPOCHS[experiment]}"])
    trained = metric(summary_of(proc.stdout), "val/mIoU")
    print(f"{experiment}: untrained head mIoU {untrained:.2f} -> trained {trained:.2f}")
    assert trained > 2 * untrained and trained > untrained + 10
