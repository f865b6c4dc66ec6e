"""Procedural images: shapes in class materials on smooth backgrounds, with occlusion.

In every export the class of an object is its **shape together with its material**
(``materials.MATERIALS``: one surface pattern per class, in random colours); scale, rotation,
position and occluders are random. (Scene exports before format version 2 gave objects random
textures shared by all classes: with shape as the only cue, a pixel's local feature could not tell
the classes apart and no CPU-sized head learnt them.) ``render_object_image`` draws one labelled
object (plus occluders) for classification; ``render_scene`` draws several objects and returns their
visible instance masks and a semantic map, for segmentation and detection exports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from selfsup.data.embedded.materials import material, smooth_background

SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "hexagon",
    "diamond",
    "crescent",
    "arrow",
)


def _regular_polygon(n: int, phase: float = 0.0) -> np.ndarray:
    a = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _outline(shape: str) -> np.ndarray | None:
    """Polygon in [-1, 1]^2 for polygonal shapes (None for the ones drawn with ellipses)."""
    if shape == "square":
        return _regular_polygon(4, math.pi / 4) * math.sqrt(2) * 0.85
    if shape == "triangle":
        return _regular_polygon(3, -math.pi / 2)
    if shape == "hexagon":
        return _regular_polygon(6)
    if shape == "diamond":
        return np.array([[0, -1], [0.55, 0], [0, 1], [-0.55, 0]], dtype=float)
    if shape == "star":
        outer = _regular_polygon(5, -math.pi / 2)
        inner = _regular_polygon(5, -math.pi / 2 + math.pi / 5) * 0.42
        return np.stack([outer, inner], axis=1).reshape(-1, 2)
    if shape == "cross":
        t = 0.33
        return np.array(
            [[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t]],
            dtype=float,
        )
    if shape == "arrow":
        return np.array([[-1, -0.3], [0.1, -0.3], [0.1, -0.8], [1, 0], [0.1, 0.8], [0.1, 0.3], [-1, 0.3]], dtype=float)
    return None


def shape_mask(shape: str, size: int, center: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """Boolean ``[size, size]`` mask of ``shape`` with the given centre (x, y), radius and rotation."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = center
    box = lambda r: [cx - r, cy - r, cx + r, cy + r]  # noqa: E731
    if shape == "circle":
        draw.ellipse(box(radius), fill=255)
    elif shape == "ring":
        draw.ellipse(box(radius), fill=255)
        draw.ellipse(box(radius * 0.55), fill=0)
    elif shape == "crescent":
        draw.ellipse(box(radius), fill=255)
        dx, dy = 0.45 * radius * math.cos(angle), 0.45 * radius * math.sin(angle)
        draw.ellipse([cx + dx - radius * 0.85, cy + dy - radius * 0.85, cx + dx + radius * 0.85, cy + dy + radius * 0.85], fill=0)
    else:
        poly = _outline(shape)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        pts = poly @ rot.T * radius + np.array([cx, cy])
        draw.polygon([tuple(p) for p in pts], fill=255)
    return np.asarray(canvas) > 127


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """``[size, size, 3]`` float texture: solid, stripes, checker, dots, blotches or gradient."""
    c1, c2 = _colour(rng), _colour(rng)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    kind = rng.integers(6)
    if kind == 0:
        t = np.zeros((size, size))
    elif kind == 1:
        a, period = rng.uniform(0, math.pi), rng.uniform(3, 10)
        t = (np.sin(2 * math.pi * (x * math.cos(a) + y * math.sin(a)) / period) > 0).astype(float)
    elif kind == 2:
        period = rng.uniform(4, 12)
        t = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(float)
    elif kind == 3:
        period = rng.uniform(5, 11)
        dx, dy = (x % period) - period / 2, (y % period) - period / 2
        t = (dx**2 + dy**2 < (period * 0.3) ** 2).astype(float)
    elif kind == 4:
        low = rng.uniform(0, 1, size=(5, 5))
        t = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255.0
    else:
        a = rng.uniform(0, 2 * math.pi)
        t = (x * math.cos(a) + y * math.sin(a)) / (size * 1.5) + 0.5
    t = np.clip(t, 0, 1)[..., None]
    return c1 * (1 - t) + c2 * t


@dataclass
class Scene:
    image: np.ndarray  # uint8 [H, W, 3]
    masks: list[np.ndarray]  # visible part of each object, bool [H, W]
    classes: list[int]  # index into SHAPES per object
    semantic: np.ndarray  # uint8 [H, W]: 0 background, 1 + class of the visible object


def _paste(canvas: np.ndarray, layer: np.ndarray, mask: np.ndarray) -> None:
    canvas[mask] = layer[mask]


def _occluders(rng: np.random.Generator, size: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(count):
        cx, cy = rng.uniform(0, size, size=2)
        rx, ry = rng.uniform(0.06, 0.16, size=2) * size
        canvas = Image.new("L", (size, size), 0)
        ImageDraw.Draw(canvas).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        out.append((np.asarray(canvas) > 127, texture(rng, size)))
    return out


def render_object_image(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """One object of class ``label``: shape ``SHAPES[label]`` in material ``MATERIALS[label]`` (random
    colours; radius 28-45 % of the image) on a smooth background, 0-1 occluders. ``uint8 [H, W, 3]``."""
    canvas = smooth_background(rng, size)
    radius = rng.uniform(0.28, 0.45) * size
    center = tuple(rng.uniform(radius * 0.7, size - radius * 0.7, size=2))
    mask = shape_mask(SHAPES[label], size, center, radius, rng.uniform(0, 2 * math.pi))
    _paste(canvas, material(rng, label, size), mask)
    for occ_mask, _ in _occluders(rng, size, int(rng.integers(0, 2))):
        _paste(canvas, smooth_background(rng, size), occ_mask)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, size: int, max_objects: int = 4, class_hues: bool = False) -> Scene:
    """1..max_objects objects of random classes, each its shape in its material (later ones occlude
    earlier ones), on a smooth background, plus 0-1 occluders in random textures (not a class).
    ``class_hues``: the first colour of class ``k``'s material has hue ``k / len(SHAPES)`` (a cue
    that even a linear read-out of a frozen random backbone finds)."""
    canvas = smooth_background(rng, size)
    owner = np.full((size, size), -1, dtype=np.int64)
    classes: list[int] = []
    for k in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(SHAPES)))
        radius = rng.uniform(0.1, 0.25) * size
        center = tuple(rng.uniform(radius * 0.5, size - radius * 0.5, size=2))
        mask = shape_mask(SHAPES[label], size, center, radius, rng.uniform(0, 2 * math.pi))
        _paste(canvas, material(rng, label, size, label / len(SHAPES) if class_hues else None), mask)
        owner[mask] = k
        classes.append(label)
    for occ_mask, occ_texture in _occluders(rng, size, int(rng.integers(0, 2))):
        _paste(canvas, occ_texture, occ_mask)
        owner[occ_mask] = -1
    masks = [owner == k for k in range(len(classes))]
    semantic = np.zeros((size, size), dtype=np.uint8)
    for k, label in enumerate(classes):
        semantic[masks[k]] = label + 1
    return Scene(np.clip(canvas, 0, 255).astype(np.uint8), masks, classes, semantic)
