"""Multi-block masks drawn over images, and how often each patch is context or target.

``mask_overlay``: the image, dimmed where a patch is neither context nor target, tinted blue on the
context block and with one colour per target block. ``mask_frequency``: over many sampler draws, the
share of images in which each patch is context / target; the official sampler's edge bias (the last
row and column are never a target, the context sits in the top-left corner) shows at a glance.
"""

from __future__ import annotations

import numpy as np
import torch

from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.viz.canvas import blend, colorize, upsample

CONTEXT_COLOUR = (40, 110, 255)
TARGET_COLOURS = ((255, 60, 40), (255, 190, 0), (200, 40, 220), (40, 200, 80), (0, 220, 220), (255, 120, 180))


def patch_masks(masks: list[torch.Tensor], index: int, grid: tuple[int, int]) -> list[np.ndarray]:
    """Boolean ``[h, w]`` patch maps of image ``index`` for each mask in ``masks`` (each ``[B, K]``)."""
    out = []
    for m in masks:
        flat = np.zeros(grid[0] * grid[1], dtype=bool)
        flat[m[index].cpu().numpy()] = True
        out.append(flat.reshape(grid))
    return out


def mask_overlay(image: np.ndarray, context: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray:
    """``uint8 [H, W, 3]`` image with its context (blue) and target blocks (one colour each)."""
    h, w = context[0].shape
    colour = np.zeros((h, w, 3), dtype=np.uint8)
    shown = np.zeros((h, w), dtype=bool)
    for c in context:
        colour[c], shown = CONTEXT_COLOUR, shown | c
    for k, t in enumerate(targets):
        colour[t], shown = TARGET_COLOURS[k % len(TARGET_COLOURS)], shown | t
    height, width = image.shape[:2]
    tinted = blend(image, upsample(colour, height, width), 0.45)
    dark = (image.astype(np.float32) * 0.25).astype(np.uint8)
    return np.where(upsample(shown.astype(np.uint8), height, width)[..., None] > 0, tinted, dark)


def mask_frequency(
    sampler: MultiBlockMaskSampler, draws: int, batch_size: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(context, target)`` ``[h, w]`` arrays: the share of ``draws`` images (sampled in batches, as
    training does) in which each patch is in a context / target block."""
    grid = (sampler.height, sampler.width)
    context, target = np.zeros(grid), np.zeros(grid)
    done, batch_index = 0, 0
    while done < draws:
        n = min(batch_size, draws - done)
        masks_enc, masks_pred = sampler(n, torch.Generator().manual_seed(seed * 1_000_003 + batch_index))
        for b in range(n):
            context += np.any(patch_masks(masks_enc, b, grid), axis=0)
            target += np.any(patch_masks(masks_pred, b, grid), axis=0)
        done, batch_index = done + n, batch_index + 1
    return context / draws, target / draws


def frequency_panel(freq: np.ndarray, size: int) -> np.ndarray:
    """A frequency map in [0, 1] as a colour picture (viridis, fixed 0..max scale)."""
    return upsample(colorize(freq, "viridis", 0.0, max(float(freq.max()), 1e-9)), size, size)
