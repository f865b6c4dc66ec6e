"""Class materials for the classification export: ten two-colour surface patterns.

Each class of the embedded classification set has its own shape *and* its own material (pattern),
with colours drawn at random per image, so neither colour statistics nor a single cue give the
class away but a representation that encodes local structure can find it.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image

MATERIALS = ("solid", "stripes", "checker", "dots", "rings", "grid", "zigzag", "blotches", "speckle", "gradient")


def _colour_pair(rng: np.random.Generator, hue: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two colours at least 150 apart (L1 over RGB), so every pattern is visible. The first is random,
    or with ``hue`` (in [0, 1)) that hue +- 0.02 at a random saturation and value in [0.55, 1]."""
    if hue is None:
        first = rng.uniform(0, 255, size=3)
    else:
        h, s, v = (hue + rng.uniform(-0.02, 0.02)) % 1.0, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)
        first = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255
    second = rng.uniform(0, 255, size=3)
    while np.abs(first - second).sum() < 150:
        second = rng.uniform(0, 255, size=3)
    return first, second


def pattern(rng: np.random.Generator, kind: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mixing weight in [0, 1] between the two colours, ``[size, size]``."""
    size = x.shape[0]
    phase = rng.uniform(0, 100)
    if kind == 0:
        return np.zeros_like(x)
    if kind == 1:
        a = rng.uniform(0, math.pi)
        return np.sin(2 * math.pi * (x * math.cos(a) + y * math.sin(a)) / 7 + phase) > 0
    if kind == 2:
        return (np.floor((x + phase) / 9) + np.floor((y + phase) / 9)) % 2
    if kind == 3:
        return ((x + phase) % 8 - 4) ** 2 + ((y + phase) % 8 - 4) ** 2 < 6
    if kind == 4:
        cx, cy = rng.uniform(0, size, size=2)
        return np.sin(np.hypot(x - cx, y - cy) / 2.0) > 0
    if kind == 5:
        return ((x + phase) % 8 < 2) | ((y + phase) % 8 < 2)
    if kind == 6:
        return np.sin(2 * math.pi * (y + 3 * np.abs((x + phase) % 8 - 4)) / 8) > 0
    if kind == 7:
        low = (rng.uniform(0, 1, size=(6, 6)) * 255).astype(np.uint8)
        return np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC)) / 255.0 > 0.5
    if kind == 8:
        return rng.uniform(0, 1, size=(size, size)) > 0.5
    a = rng.uniform(0, 2 * math.pi)
    return (x * math.cos(a) + y * math.sin(a)) / (size * 1.2) + 0.5


def material(rng: np.random.Generator, kind: int, size: int, hue: float | None = None) -> np.ndarray:
    """``[size, size, 3]`` float image of material ``MATERIALS[kind]`` in two random colours (the
    first of the given ``hue`` if one is given)."""
    first, second = _colour_pair(rng, hue)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    t = np.clip(np.asarray(pattern(rng, kind, x, y), dtype=np.float64), 0, 1)[..., None]
    return first * (1 - t) + second * t


def smooth_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``[size, size, 3]`` float linear gradient between two random colours at a random angle."""
    first, second = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    a = rng.uniform(0, 2 * math.pi)
    t = np.clip((x * math.cos(a) + y * math.sin(a)) / (size * 1.5) + 0.5, 0, 1)[..., None]
    return first * (1 - t) + second * t
