"""Helpers of the probing tests: a tiny labelled ImageFolder, a tiny JEPA backbone file, in-process runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from selfsup.models.vit import JEPAViT
from selfsup.run import run
from selfsup.training.export import save_encoder
from tests.test_config import compose

# A backbone small enough for seconds-long runs; EP_32 needs the width divisible by 32.
TINY = ["backbone.embed_dim=64", "backbone.depth=2", "backbone.num_heads=4", "backbone.patch_size=8", "data.image_size=32"]


def make_imagefolder(root: Path, classes: int = 3, per_class: int = 8, size: int = 40) -> Path:
    """``root/{train,val}/c<k>/<i>.png``: class ``k`` is a bright square at a class-specific corner on noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", max(2, per_class // 2))):
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                r, c = divmod(k % 4, 2)
                img[r * size // 2 : r * size // 2 + size // 2, c * size // 2 : c * size // 2 + size // 2] = 230
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def make_backbone(path: Path, seed: int = 0) -> Path:
    """A random ``JEPAViT`` matching ``TINY``, saved as a backbone-only safetensors file."""
    import torch

    torch.manual_seed(seed)
    save_encoder(JEPAViT(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4), path, "target_encoder")
    return path


def run_in_process(overrides: list[str], tmp_path: Path, run_dir: str = "run") -> dict[str, float]:
    """Compose ``train.yaml`` with ``overrides`` and run it here (no subprocess); returns the final metrics."""
    cfg = compose(overrides, tmp_path)
    cfg.paths.run_dir = str(tmp_path / run_dir)
    return run(cfg)
