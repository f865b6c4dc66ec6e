"""The embedded dataset: generated locally and deterministically, written to disk in real formats.

``ensure_imagefolder(root, ...)`` writes ``<root>/{train,val}/<shape>/<n>.png`` on first use (under a
file lock, into a temporary folder renamed into place, so concurrent runs never see half a dataset)
and returns the root. The same settings always give byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from selfsup.data.embedded.cache import write_once
from selfsup.data.embedded.render import SHAPES, render_object_image

FORMAT_VERSION = 2  # 2: class-specific materials in the classification export


def ensure_imagefolder(
    root: str | os.PathLike,
    image_size: int = 96,
    train_per_class: int = 200,
    val_per_class: int = 50,
    num_classes: int = len(SHAPES),
    seed: int = 0,
) -> Path:
    """Generate (once) the classification export in ImageFolder layout and return its root."""
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"data.embedded.num_classes must be in [2, {len(SHAPES)}], got {num_classes}")
    root = Path(root)
    spec = {
        "format": "imagefolder",
        "version": FORMAT_VERSION,
        "image_size": image_size,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "num_classes": num_classes,
        "seed": seed,
    }

    def write(tmp: Path) -> None:
        for split_id, (split, per_class) in enumerate((("train", train_per_class), ("val", val_per_class))):
            for label in range(num_classes):
                folder = tmp / split / SHAPES[label]
                folder.mkdir(parents=True)
                rng = np.random.default_rng([seed, split_id, label])
                for n in range(per_class):
                    pixels = render_object_image(rng, image_size, label)
                    Image.fromarray(pixels).save(folder / f"{n:05d}.png", optimize=False)

    return write_once(root, spec, write)
