"""Shared test helpers: running the real CLI in a subprocess with outputs in a temporary folder."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch

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


def run_command(command: str, output_dir: Path, extra: list[str] = (), timeout: float = 1800, check: bool = True, **env: str):
    """Run a README command verbatim (``python tools/<x>.py ...``), with ``extra`` overrides appended
    (outputs always go to ``output_dir``). The verbatim string is what ``test_readme.py`` looks for."""
    words = shlex.split(command)
    assert words[0] == "python" and words[1].startswith("tools/"), command
    cmd = [sys.executable, str(ROOT / words[1]), *words[2:], *extra]
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


def uncompressed_rle(mask) -> list[int]:
    """COCO's uncompressed RLE ``counts`` (column-major runs, starting with zeros) of a 2-D mask."""
    import numpy as np

    flat = np.asarray(mask).astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat.size and flat[0] == 1 else runs
