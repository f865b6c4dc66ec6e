"""The embedded dataset's COCO-format export, for detection and instance segmentation.

``ensure_coco(root, ...)`` writes, once (``write_once``: locked, atomic, regenerated only when the
settings change), the layout of COCO 2017 with split names ``train`` / ``val``::

    <root>/annotations/instances_train.json   <root>/train/000001.png ...
    <root>/annotations/instances_val.json     <root>/val/000001.png ...

Each image is a ``render_scene``: 1..``max_objects`` shapes, each in its class's material (10 categories, ``SHAPES``),
later ones occluding earlier ones, plus random occluders. An annotation is the *visible* part of an
object: its segmentation is a polygon list when that part has no hole (traced exactly along pixel
edges, so decoding it gives the rendered mask back), and compressed RLE when it has one (rings,
objects pierced by an occluder). ``area`` is the mask's pixel count and ``bbox`` its tight
``[x, y, w, h]``, as in COCO. The same settings always give byte-identical files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from selfsup.data.embedded.cache import write_once
from selfsup.data.embedded.polygons import mask_to_polygons
from selfsup.data.embedded.render import SHAPES, render_scene

FORMAT_VERSION = 2  # 2: objects drawn in their class's material (was: random textures)
SPLITS = ("train", "val")


def coco_categories() -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE (``counts`` as a string) of a boolean ``[H, W]`` mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def instance_annotation(mask: np.ndarray, category_id: int, image_id: int, ann_id: int) -> dict:
    """One COCO annotation of a visible instance mask: polygons if hole-free, else RLE."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    polygons = mask_to_polygons(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": polygons if polygons is not None else encode_rle(mask),
        "area": int(mask.sum()),
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "iscrowd": 0,
    }


def _write_split(tmp: Path, split: str, split_id: int, count: int, image_size: int, max_objects: int, seed: int) -> None:
    (tmp / split).mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        image_id = index + 1
        scene = render_scene(np.random.default_rng([seed, split_id, index]), image_size, max_objects)
        file_name = f"{image_id:06d}.png"
        Image.fromarray(scene.image).save(tmp / split / file_name, optimize=False)
        images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
        for mask, label in zip(scene.masks, scene.classes):
            if mask.any():  # an object hidden entirely by later ones is not annotated
                annotations.append(instance_annotation(mask, label + 1, image_id, len(annotations) + 1))
    dataset = {
        "info": {"description": f"selfsup embedded shapes, COCO export ({split})", "version": str(FORMAT_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    (tmp / "annotations").mkdir(exist_ok=True)
    (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(dataset))


def ensure_coco(
    root: str | os.PathLike,
    image_size: int = 128,
    train_images: int = 1000,
    val_images: int = 200,
    max_objects: int = 4,
    seed: int = 0,
) -> Path:
    """Generate (once) the COCO-format export under ``root`` and return ``root``."""
    if train_images < 1 or val_images < 1:
        raise ValueError(f"data.embedded needs at least one image per split, got train={train_images} val={val_images}")
    root = Path(root)
    spec = {
        "format": "coco",
        "version": FORMAT_VERSION,
        "image_size": image_size,
        "train_images": train_images,
        "val_images": val_images,
        "max_objects": max_objects,
        "seed": seed,
    }

    def write(tmp: Path) -> None:
        for split_id, (split, count) in enumerate(zip(SPLITS, (train_images, val_images))):
            _write_split(tmp, split, split_id, count, image_size, max_objects, seed)

    return write_once(root, spec, write)
