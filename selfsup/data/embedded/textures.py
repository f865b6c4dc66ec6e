"""The texture variant of the classification export (``data.embedded.kind=textures``).

Each image is one class material (``materials.MATERIALS``) over the whole frame, at a random rotation
and scale (0.8-1.4), its two colours varying smoothly across the image: the first is a random colour
field (3 x 3 random colours, bicubic), the second its complement plus a per-image shift. No colour is
constant over an image, so what every part of an image shares, and what JEPA-style prediction of one
part from another has to capture, is the pattern, i.e. the class.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from selfsup.data.embedded.materials import pattern


def colour_field(rng: np.random.Generator, size: int, cells: int = 3) -> np.ndarray:
    """``[size, size, 3]`` float image: ``cells x cells`` random colours, bicubically upsampled."""
    low = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC)).astype(np.float64)


def render_texture_image(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """Material ``MATERIALS[label]`` over the whole ``size x size`` image. ``uint8 [H, W, 3]``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    angle, scale = rng.uniform(0, 2 * math.pi), rng.uniform(0.8, 1.4)
    xr = (x * math.cos(angle) - y * math.sin(angle)) / scale
    yr = (x * math.sin(angle) + y * math.cos(angle)) / scale
    t = np.clip(np.asarray(pattern(rng, label, xr, yr), dtype=np.float64), 0, 1)[..., None]
    first = colour_field(rng, size)
    second = np.clip(255 - first + rng.normal(0, 25, size=3), 0, 255)
    return np.clip(first * (1 - t) + second * t, 0, 255).astype(np.uint8)
