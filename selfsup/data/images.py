"""Reading image files robustly, and the folder datasets built on it.

``load_rgb`` turns every mode a real dataset contains into 8-bit RGB: grayscale and 1-bit images are
replicated, 16-bit and 32-bit integer images are rescaled (not clipped to white), float images are
scaled, images with transparency are composited over the ImageNet mean colour (so transparent
regions normalise to ~0), CMYK/YCbCr/palette images are converted. A file that cannot be decoded
raises ``CorruptImageError`` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
BACKGROUND_RGB = (124, 116, 104)  # ImageNet mean colour

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never silently grey


class CorruptImageError(RuntimeError):
    """An image file that cannot be decoded."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see module docstring)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully and return it as RGB; raise ``CorruptImageError`` if it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(
            f"cannot read image {path}: {err}. Fix or delete the file, or set data.skip_corrupt=true "
            "to skip unreadable files (each skip is counted in the log as data/skipped_corrupt)"
        ) from err


def _list_images(folder: Path) -> list[Path]:
    files = []
    for dirpath, _, names in os.walk(folder, followlinks=True):
        files.extend(Path(dirpath) / n for n in names if n.lower().endswith(IMG_EXTENSIONS))
    return sorted(files)


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.root={root} does not exist or is not a folder. Point data.root at a dataset in "
            "ImageFolder layout (<root>/train/<class>/<image>, <root>/val/<class>/<image>), or use "
            "data=embedded for the built-in dataset."
        )


class ImageFolderDataset:
    """Labelled images in ``<root>/<split>/<class>/...`` (ImageNet / torchvision ImageFolder layout).

    Classes are the sorted sub-folder names of the split, as in ``torchvision.datasets.ImageFolder``.
    """

    def __init__(self, root: str | os.PathLike, split: str) -> None:
        self.root = Path(root)
        _check_root(self.root)
        folder = self.root / split
        if not folder.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"no '{split}' folder under data.root={self.root} (found: {found or 'nothing'}); "
                "ImageFolder layout is <root>/<split>/<class>/<image>"
            )
        self.classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        self.samples: list[tuple[Path, int]] = [
            (path, label) for label, cls in enumerate(self.classes) for path in _list_images(folder / cls)
        ]
        if not self.samples:
            raise FileNotFoundError(
                f"no images ({', '.join(IMG_EXTENSIONS)}) found in class folders under {folder}; "
                "ImageFolder layout is <root>/<split>/<class>/<image>"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_rgb(path), label


class UnlabeledImageDataset:
    """Every image under ``<root>/<split>`` (or ``<root>`` when ``split`` is empty), label -1."""

    def __init__(self, root: str | os.PathLike, split: str = "") -> None:
        self.root = Path(root)
        _check_root(self.root)
        folder = self.root / split if split else self.root
        if not folder.is_dir():
            raise FileNotFoundError(f"no '{split}' folder under data.root={self.root}")
        self.classes: list[str] = []
        self.samples = [(path, -1) for path in _list_images(folder)]
        if not self.samples:
            raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) found under {folder}")

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_rgb(path), label
