"""Image / label-map pairs in the ADE20K (ADEChallengeData2016) layout.

::

    <root>/images/<split>/<name>.jpg          split: training | validation
    <root>/annotations/<split>/<name>.png     8-bit class indices, 0 = "other"

With ``reduce_zero_label`` (the ADE20K convention of mmseg, BEiT, MAE, iBOT) label 0 becomes the
ignore index and every other label ``k`` becomes ``k - 1``: the 150 ADE20K classes are 0..149.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from selfsup.data.images import IMG_EXTENSIONS, CorruptImageError, load_rgb

LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")


def load_label_map(path: str | os.PathLike) -> np.ndarray:
    """``int64 [H, W]`` class indices of a single-channel (L, P or 16-bit) PNG."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in LABEL_MODES:
                raise CorruptImageError(
                    f"label map {path} has mode {image.mode}; it must be a single-channel image of class "
                    f"indices ({', '.join(LABEL_MODES)}), not a colour visualisation"
                )
            return np.asarray(image).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(
            f"cannot read label map {path}: {err}. Fix or delete the pair, or set data.skip_corrupt=true"
        ) from err


def reduce_zero_label(label: np.ndarray, ignore_index: int) -> np.ndarray:
    """mmseg's ``reduce_zero_label``: 0 -> ignore, k -> k - 1, an existing ignore label stays ignored."""
    out = label - 1
    out[(label == 0) | (label == ignore_index)] = ignore_index
    return out


class ADE20KSource:
    """The pairs of one split; ``load(i) -> ((PIL image, int64 label map), i)``.

    Every image needs its annotation (same stem, ``.png``); labels outside ``[0, num_classes)`` after
    the reduction (other than ``ignore_index``) are an error naming the file.
    """

    def __init__(
        self, root: str | os.PathLike, split: str, class_names: list[str], reduce_zero_label: bool, ignore_index: int
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data.root={self.root} does not exist or is not a folder. Point data.root at an ADE20K-format "
                "dataset (ADEChallengeData2016: <root>/images/{training,validation}/*.jpg and "
                "<root>/annotations/{training,validation}/*.png), or use data=ade20k_embedded"
            )
        images, annotations = self.root / "images" / split, self.root / "annotations" / split
        for folder in (images, annotations):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"no folder {folder}: ADE20K layout is <root>/images/<split>/*.jpg with "
                    f"<root>/annotations/<split>/*.png (split '{split}')"
                )
        paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) in {images}")
        missing = [p.name for p in paths if not (annotations / f"{p.stem}.png").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) in {images} have no annotation <stem>.png in {annotations}: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
        self.samples = [(p, annotations / f"{p.stem}.png") for p in paths]
        self.classes = list(class_names)
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        return self.samples[index][0].stem

    def load(self, index: int) -> tuple[tuple[Image.Image, np.ndarray], int]:
        image_path, label_path = self.samples[index]
        image, label = load_rgb(image_path), load_label_map(label_path)
        if label.shape != (image.height, image.width):
            raise CorruptImageError(
                f"{label_path} is {label.shape[1]}x{label.shape[0]} but {image_path} is {image.width}x{image.height}"
            )
        if self.reduce_zero_label:
            label = reduce_zero_label(label, self.ignore_index)
        valid = label[label != self.ignore_index]
        if valid.size and (valid.min() < 0 or valid.max() >= len(self.classes)):
            raise ValueError(
                f"{label_path} has labels in [{valid.min()}, {valid.max()}] (after reduce_zero_label="
                f"{self.reduce_zero_label}) but data.num_classes={len(self.classes)}; check data.num_classes, "
                "data.class_names and data.reduce_zero_label"
            )
        return (image, label), index
