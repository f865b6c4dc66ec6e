"""Turning tensors into pictures: de-normalised images, colour maps, labelled grids of panels.

A figure is a grid of square panels of ``panel`` pixels with a title strip of ``TITLE_HEIGHT``
pixels above each row: its size is ``(columns * panel) x (rows * (panel + TITLE_HEIGHT))``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw
from torchvision import transforms as T

from selfsup.training.files import atomic_write

TITLE_HEIGHT = 14
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalization_of(transform: object) -> tuple[Sequence[float], Sequence[float]]:
    """``(mean, std)`` of the ``Normalize`` inside a torchvision transform (ImageNet's if none)."""
    for t in getattr(transform, "transforms", [transform]):
        if isinstance(t, T.Normalize):
            return tuple(t.mean), tuple(t.std)
    return IMAGENET_MEAN, IMAGENET_STD


def to_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised ``[B, 3, H, W]`` -> ``uint8 [B, H, W, 3]``."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    x = (images.detach().float().cpu() * s + m).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def colorize(values: np.ndarray, cmap: str = "inferno", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """``[H, W]`` floats -> ``uint8 [H, W, 3]`` through a matplotlib colour map (min-max by default)."""
    lo = float(values.min()) if vmin is None else vmin
    hi = float(values.max()) if vmax is None else vmax
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values, dtype=np.float64)
    return (colormaps[cmap](np.clip(scaled, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def upsample(grid_values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a patch-grid array ``[h, w(, c)]`` to ``height x width`` pixels."""
    mode = "RGB" if grid_values.ndim == 3 else "F"
    image = Image.fromarray(grid_values if mode == "RGB" else grid_values.astype(np.float32), mode=mode)
    return np.asarray(image.resize((width, height), Image.NEAREST))


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float) -> np.ndarray:
    return (image.astype(np.float32) * (1 - alpha) + overlay.astype(np.float32) * alpha).round().astype(np.uint8)


def figure(rows: Sequence[Sequence[tuple[str, np.ndarray | None]]], panel: int) -> np.ndarray:
    """Compose rows of ``(title, uint8 [h, w, 3] or None)`` panels into one ``uint8`` picture."""
    columns = max(len(r) for r in rows)
    canvas = Image.new("RGB", (columns * panel, len(rows) * (panel + TITLE_HEIGHT)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        top = i * (panel + TITLE_HEIGHT)
        for j, (title, picture) in enumerate(row):
            draw.text((j * panel + 2, top + 1), title[: max(panel // 6, 4)], fill=(0, 0, 0))
            if picture is not None:
                tile = Image.fromarray(picture).resize((panel, panel), Image.NEAREST)
                canvas.paste(tile, (j * panel, top + TITLE_HEIGHT))
    return np.asarray(canvas)


def save_png(picture: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``uint8 [H, W, 3]`` as a PNG, atomically (parent folders created)."""
    atomic_write(path, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"))
