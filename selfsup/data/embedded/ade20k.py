"""The embedded dataset's semantic-segmentation export, in the ADE20K (ADEChallengeData2016) layout.

``ensure_ade20k(root, ...)`` writes, once (``write_once``: locked, atomic, keyed by the settings)::

    <root>/images/training/ADE_train_00000001.jpg     RGB scenes (``render_scene``)
    <root>/images/validation/ADE_val_00000001.jpg
    <root>/annotations/training/ADE_train_00000001.png  8-bit label maps: 0 = "other" (background,
    <root>/annotations/validation/ADE_val_00000001.png   occluders), 1..10 = the shapes of ``SHAPES``

exactly what ADE20K's loaders read: with the reduce-zero-label convention 0 becomes the ignore
index 255 and the shapes become classes 0..9. Every image is drawn from its own generator seeded
by ``(seed, split, image number)``, so the same settings give byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from selfsup.data.embedded.cache import write_once
from selfsup.data.embedded.render import SHAPES, render_scene

FORMAT_VERSION = 3  # 2: objects drawn in their class's material (was: random textures); 3: class_hues
SPLITS = (("training", "train"), ("validation", "val"))


def ensure_ade20k(
    root: str | os.PathLike,
    image_size: int = 96,
    train_images: int = 600,
    val_images: int = 100,
    max_objects: int = 4,
    seed: int = 0,
    jpeg_quality: int = 95,
    class_hues: bool = True,
) -> Path:
    """Generate (once) the ADE20K-format export and return its root.

    Config keys (``data.embedded`` of ``configs/data/ade20k_embedded.yaml``): ``image_size``,
    ``train_images``, ``val_images``, ``max_objects`` (1..max_objects shapes per scene), ``seed``,
    ``jpeg_quality``, ``class_hues`` (true: each class's material has its own hue, so that the linear
    protocol on a frozen, even random, backbone has a per-pixel cue; false: random colours, the
    classes told apart by shape and pattern only, which no linear read-out of a CPU-sized frozen ViT
    separated: mIoU at chance, README Results).
    """
    if train_images < 1 or val_images < 1:
        raise ValueError(f"data.embedded.train_images and val_images must be positive, got {train_images}, {val_images}")
    root = Path(root)
    spec = {
        "format": "ade20k",
        "version": FORMAT_VERSION,
        "classes": list(SHAPES),
        "image_size": image_size,
        "train_images": train_images,
        "val_images": val_images,
        "max_objects": max_objects,
        "seed": seed,
        "jpeg_quality": jpeg_quality,
        "class_hues": class_hues,
    }

    def write(tmp: Path) -> None:
        for split_id, ((split, prefix), count) in enumerate(zip(SPLITS, (train_images, val_images))):
            images, annotations = tmp / "images" / split, tmp / "annotations" / split
            images.mkdir(parents=True)
            annotations.mkdir(parents=True)
            for n in range(count):
                scene = render_scene(np.random.default_rng([seed, split_id, n]), image_size, max_objects, class_hues)
                name = f"ADE_{prefix}_{n + 1:08d}"
                Image.fromarray(scene.image).save(images / f"{name}.jpg", quality=jpeg_quality)
                Image.fromarray(scene.semantic).save(annotations / f"{name}.png", optimize=False)
        (tmp / "classes.txt").write_text("\n".join(["other", *SHAPES]) + "\n")

    return write_once(root, spec, write)
