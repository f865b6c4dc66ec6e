"""Shared test helpers: running the real CLI in a subprocess with outputs in a temporary folder."""

from __future__ import annotations

import csv
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from selfsup.config import instantiate
from selfsup.eval.linear_probe import extract_pooled, fit_linear_probe
from selfsup.reference.ijepa import RefPredictor, RefViT

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tools" / "train.py"


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    env.pop("WANDB_API_KEY", None)
    for key in [k for k in env if k.startswith("SLURM_")]:
        env.pop(key)  # a test run inside an allocation must not look like a SLURM job
    env.update(extra)
    return env


def run_train(args: list[str], output_dir: Path, timeout: float = 900, check: bool = True, **env: str):
    """``python tools/train.py <args> paths.output_dir=<output_dir>``; returns the CompletedProcess."""
    cmd = [sys.executable, str(TRAIN), *args, f"paths.output_dir={output_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=cli_env(**env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


# A run that checkpoints after every optimiser step, in one process, without validation or exports.
EVERY_STEP_CHECKPOINTS = [
    "data.num_workers=0", "data.persistent_workers=false", "trainer.limit_val_batches=0",
    "callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.every_n_epochs=null",
    "callbacks.model_checkpoint.export_backbones=false",
]


def kill_train_at_step(args: list[str], output_dir: Path, ckpt_dir: Path, step: int, sig: int = signal.SIGKILL) -> None:
    """Start ``tools/train.py <args>``; once the checkpoint of optimiser step ``step`` appears in
    ``ckpt_dir``, send ``sig`` to the process and wait for it to die."""
    cmd = [sys.executable, str(TRAIN), *args, f"paths.output_dir={output_dir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpt_dir.glob(f"*step{step:07d}.ckpt")):
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    proc.wait()


def run_command(
    command: str, output_dir: Path, extra: list[str] = (), timeout: float = 1800, check: bool = True,
    prefix: list[str] = (), **env: str,
):
    """Run a README command verbatim (``python tools/<x>.py ...``), with ``extra`` overrides appended
    (outputs always go to ``output_dir``). The verbatim string is what ``test_readme.py`` looks for.
    ``prefix`` runs it through a wrapper (e.g. into the test SLURM cluster's network namespace)."""
    words = shlex.split(command)
    assert words[0] == "python" and words[1].startswith("tools/"), command
    cmd = [*prefix, sys.executable, str(ROOT / words[1]), *words[2:], *extra]
    if words[1] == "tools/train.py":
        cmd.append(f"paths.output_dir={output_dir}")
    proc = subprocess.run(cmd, cwd=ROOT, env=cli_env(**env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def summary_of(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("done in ")]
    assert lines, f"no summary line in:\n{stdout[-3000:]}"
    return lines[-1]


def make_official_checkpoint(tmp_path, img=32, patch=8, dim=48, depth=2, heads=3, pdim=24, pdepth=2):
    """An official-format I-JEPA ``.pth.tar`` (DDP ``module.`` prefixes) with random weights, built from
    the plain reference modules; returns ``(path, encoder, target_encoder, predictor)``."""
    torch.manual_seed(1)
    grid = img // patch
    enc, tgt = RefViT(img, patch, dim, depth, heads), RefViT(img, patch, dim, depth, heads)
    pred = RefPredictor(grid, dim, pdim, pdepth, heads)
    for m in (enc, tgt, pred):
        for p in m.parameters():
            if p.requires_grad:
                p.data.normal_(0, 0.05)
    ckpt = {
        name: {f"module.{k}": v for k, v in m.state_dict().items()}
        for name, m in (("encoder", enc), ("target_encoder", tgt), ("predictor", pred))
    }
    ckpt.update(opt={}, scaler=None, epoch=300, loss=0.1, batch_size=128, world_size=16, lr=1e-3)
    path = tmp_path / "IN1K-vit.h.14-300e.pth.tar"
    torch.save(ckpt, path)
    return path, enc, tgt, pred


# The textures recipes (README Results, 2,500 val images): 50.1 % (I-JEPA) and 49.2 % (DMT-JEPA) against
# 42.2-44.0 % for three random inits. Asserted: 3 points over the best of them (about 2 standard errors
# of a difference; 6-7 points over their mean), leaving 2-3 points for run-to-run noise.
CLEAR_MARGIN = 0.03

# The attentive (EP) probe on 2,500 val images, dmt_jepa_textures_long: 85.0 % against 78.6-81.6 % for three
# random inits. Asserted: 2 points over the best of them (about 2 standard errors of a difference, 1.1
# points here; 4.5 points over their mean).
EP_CLEAR_MARGIN = 2.0

PROBE_VAL_PER_CLASS = 250  # 2,500 val images: the standard error of a top-1 near 20 % is 0.8 points (1.8 at 500)


def probe_accuracy(run_dir: Path, checkpoint: Path | None, val_per_class: int = PROBE_VAL_PER_CLASS, seed: int = 0) -> float:
    """Linear-probe top-1 on the embedded val split of average-pooled target-encoder features
    (``checkpoint=None``: the same architecture at its random initialisation). The val split is
    enlarged to ``val_per_class`` images per class (the same generator: the default 50 per class are
    its first 50), so that differences of a few points are measured, not drawn. ``seed`` seeds the
    random initialisation (a checkpoint then replaces it)."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.data.embedded.val_per_class = val_per_class
    cfg.backbone.checkpoint = str(checkpoint) if checkpoint else None
    cfg.data.train_transform = cfg.data.val_transform  # no augmentation for probe features
    cfg.data.update(mask_sampler=None, shuffle=False, drop_last=False, num_workers=0, persistent_workers=False)
    torch.manual_seed(seed)
    encoder = instantiate(cfg.backbone)
    data = instantiate(cfg.data)
    data.setup("fit")
    train = extract_pooled(encoder, data.train_dataloader())
    val = extract_pooled(encoder, data.val_dataloader())
    return fit_linear_probe(*train, *val)


def ep_probe_accuracy(output_dir: Path, checkpoint: Path | None, name: str, overrides: list[str] = ()) -> float:
    """Best-epoch val top-1 (%) of ``experiment=probe_ep`` (EP_32, LARS at the embedded scale's
    ``base_lr=10``, 90 epochs) on cached, un-augmented features of ``checkpoint`` (None: random init);
    ``overrides`` are appended (e.g. ``data.embedded.kind=textures``)."""
    import json

    run_train(["experiment=probe_ep", f"backbone.checkpoint={checkpoint if checkpoint else 'null'}", "schedule.base_lr=10",
               "data.train_transform.augment=false", "callbacks=probe", "logger=none", f"run_name={name}",
               "data.num_workers=0", "data.persistent_workers=false", *overrides], output_dir, timeout=1800)
    results = json.loads((output_dir / "probe_ep" / name / "probe_results.json").read_text())
    return results["best"]["probe"]["acc1"]


def logged_losses(run_dir: Path) -> list[float]:
    """``train/loss`` values of a run's CSV log, in order."""
    with open(run_dir / "csv" / "metrics.csv") as fh:
        return [float(row["train/loss"]) for row in csv.DictReader(fh) if row.get("train/loss")]
def uncompressed_rle(mask) -> list[int]:
    """COCO's uncompressed RLE ``counts`` (column-major runs, starting with zeros) of a 2-D mask."""
    import numpy as np

    flat = np.asarray(mask).astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat.size and flat[0] == 1 else runs


def first_and_last_loss(run_dir: Path) -> tuple[float, float]:
    """A run's ``train/loss`` averaged over its first and its last three logged steps."""
    losses = logged_losses(run_dir)
    return sum(losses[:3]) / 3, sum(losses[-3:]) / 3


def learning_numbers(run_dir: Path, random_seeds: int = 3) -> tuple[float, float, float, list[float]]:
    """``(first loss, last loss, probe top-1 trained, [probe top-1 at random init, per seed])`` of a
    pretraining run: losses averaged over the first and last three logged steps, probes as
    ``probe_accuracy`` (random initialisations seeded 0 .. random_seeds - 1)."""
    first, last = first_and_last_loss(run_dir)
    trained = probe_accuracy(run_dir, run_dir / "checkpoints" / "last.ckpt")
    return first, last, trained, [probe_accuracy(run_dir, None, seed=s) for s in range(random_seeds)]
