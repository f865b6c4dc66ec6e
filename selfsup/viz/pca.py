"""The first three principal components of patch features as RGB (the DINOv2-style picture).

PCA is fitted on all patch tokens of the images shown together (centred, SVD), each component is
min-max scaled over those tokens to [0, 1]; similar parts of different images get similar colours.
"""

from __future__ import annotations

import numpy as np
import torch


def pca_rgb(tokens: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """``tokens [B, N, D]`` -> ``uint8 [B, h, w, 3]``: the first 3 principal components as RGB."""
    b, n, d = tokens.shape
    x = tokens.detach().double().cpu().reshape(b * n, d)
    x = x - x.mean(dim=0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    k = min(3, v.shape[0])
    proj = x @ v[:k].T  # [B*N, k]
    sign = torch.sign(proj.sum(dim=0) + 1e-12)  # a deterministic orientation of each component
    proj = proj * sign
    lo, hi = proj.min(dim=0).values, proj.max(dim=0).values
    rgb = torch.zeros(b * n, 3, dtype=torch.float64)
    rgb[:, :k] = (proj - lo) / (hi - lo).clamp_min(1e-12)
    return (rgb.reshape(b, *grid, 3).numpy() * 255).round().astype(np.uint8)
