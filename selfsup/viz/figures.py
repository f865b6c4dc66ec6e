"""The three pictures, as ``uint8 [H, W, 3]`` arrays (shared by ``tools/visualize.py`` and the
``TrainingPictures`` callback). Sizes follow ``selfsup.viz.canvas.figure``.

- ``masks_figure``: per image, two draws of each sampler over the image; a last row of heat maps
  (share of images in which a patch is context / target, per sampler, over ``draws`` images).
- ``attention_figure``: per image, the image then the maps of each attention source over it.
- ``pca_figure``: per image, the image then the PCA picture of each feature set.
"""

from __future__ import annotations

import numpy as np
import torch

from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.viz.attention import AttentionSource, attention_panels
from selfsup.viz.canvas import figure, upsample
from selfsup.viz.masks import frequency_panel, mask_frequency, mask_overlay, patch_masks
from selfsup.viz.pca import pca_rgb

DRAWS_PER_IMAGE = 2


def masks_figure(
    images: np.ndarray, samplers: dict[str, MultiBlockMaskSampler], draws: int, panel: int, seed: int = 0
) -> np.ndarray:
    """Rows: one per image (``DRAWS_PER_IMAGE`` draws of each sampler), then the frequency maps."""
    n = images.shape[0]
    rows: list[list[tuple[str, np.ndarray | None]]] = [[] for _ in range(n)]
    heat_row: list[tuple[str, np.ndarray | None]] = []
    for name, sampler in samplers.items():
        grid = (sampler.height, sampler.width)
        for d in range(DRAWS_PER_IMAGE):
            masks_enc, masks_pred = sampler(n, torch.Generator().manual_seed(seed + d))
            for b in range(n):
                overlay = mask_overlay(images[b], patch_masks(masks_enc, b, grid), patch_masks(masks_pred, b, grid))
                rows[b].append((f"{name} draw {d + 1}", overlay))
        context, target = mask_frequency(sampler, draws, seed=seed)
        heat_row.append((f"{name} ctx max {context.max():.2f}", frequency_panel(context, panel)))
        heat_row.append((f"{name} tgt max {target.max():.2f}", frequency_panel(target, panel)))
    return figure([*rows, heat_row], panel)


def attention_figure(
    images: torch.Tensor, pictures: np.ndarray, sources: dict[str, AttentionSource], grid: tuple[int, int], panel: int
) -> np.ndarray:
    """Rows: one per image; the image, then every map of every source (titles prefixed by the source
    name when there are several)."""
    rows = [[("image", pictures[b])] for b in range(len(pictures))]
    for name, source in sources.items():
        maps, titles = source.attention_maps(images)
        for b in range(len(pictures)):
            for title, panel_picture in zip(titles, attention_panels(pictures[b], maps[b], grid)):
                rows[b].append((f"{name}: {title}" if len(sources) > 1 else title, panel_picture))
    return figure(rows, panel)


def pca_figure(pictures: np.ndarray, tokens: dict[str, torch.Tensor], grid: tuple[int, int], panel: int) -> np.ndarray:
    """Rows: one per image; the image, then the PCA picture of each ``[B, N, D]`` feature set."""
    rows = [[("image", pictures[b])] for b in range(len(pictures))]
    height, width = pictures.shape[1:3]
    for name, feats in tokens.items():
        rgb = pca_rgb(feats, grid)
        for b in range(len(pictures)):
            rows[b].append((f"PCA {name}", upsample(rgb[b], height, width)))
    return figure(rows, panel)
