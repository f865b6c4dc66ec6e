"""The embedded dataset: generated locally and deterministically, written to disk in real formats.

``ensure_imagefolder(root, ...)`` writes ``<root>/{train,val}/<class>/<n>.png`` on first use (under a
file lock, into a temporary folder renamed into place, so concurrent runs never see half a dataset)
and returns the root. The same settings always give byte-identical files. ``kind=objects`` (the
default): one object per image, its class's shape in its class's material (classes named by shape);
``kind=textures``: its class's material over the whole image in smoothly varying colours
(``textures.py``; classes named by material).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from selfsup.data.embedded.cache import write_once
from selfsup.data.embedded.materials import MATERIALS
from selfsup.data.embedded.render import SHAPES, render_object_image
from selfsup.data.embedded.textures import render_texture_image

KINDS = {"objects": (SHAPES, render_object_image), "textures": (MATERIALS, render_texture_image)}

FORMAT_VERSION = 2  # 2: class-specific materials in the classification export


def ensure_imagefolder(
    root: str | os.PathLike,
    image_size: int = 96,
    train_per_class: int = 200,
    val_per_class: int = 50,
    num_classes: int = len(SHAPES),
    seed: int = 0,
    kind: str = "objects",
) -> Path:
    """Generate (once) the classification export in ImageFolder layout and return its root."""
    if kind not in KINDS:
        raise ValueError(f"data.embedded.kind must be one of {sorted(KINDS)}, got {kind!r}")
    names, render = KINDS[kind]
    if not 2 <= num_classes <= len(names):
        raise ValueError(f"data.embedded.num_classes must be in [2, {len(names)}], got {num_classes}")
    root = Path(root)
    spec = {
        "format": "imagefolder",
        "version": FORMAT_VERSION,
        "image_size": image_size,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "num_classes": num_classes,
        "seed": seed,
        **({"kind": kind} if kind != "objects" else {}),  # the objects' marker predates kinds: keep it
    }

    def write(tmp: Path) -> None:
        for split_id, (split, per_class) in enumerate((("train", train_per_class), ("val", val_per_class))):
            for label in range(num_classes):
                folder = tmp / split / names[label]
                folder.mkdir(parents=True)
                rng = np.random.default_rng([seed, split_id, label])
                for n in range(per_class):
                    pixels = render(rng, image_size, label)
                    Image.fromarray(pixels).save(folder / f"{n:05d}.png", optimize=False)

    return write_once(root, spec, write)
