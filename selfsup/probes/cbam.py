"""CBAM pooling (``CbamPooling`` of ``poolings/cbam.py``, on timm's CBAM layers).

Tokens on their grid; channel attention (shared 1x1-conv MLP D -> D/16 -> D on the average- and
max-pooled map, no bias, sigmoid of the sum), then spatial attention (7x7 conv without bias +
BatchNorm on [mean, max] over channels, sigmoid); residual add, ReLU, global average pool.
"""

from __future__ import annotations

import math

import torch
from timm.layers.cbam import ChannelAttn, SpatialAttn
from torch import nn


class CbamPooling(nn.Module):
    """Config keys (``configs/probe/cbam.yaml``): ``dim``, ``rd_ratio`` (1/16), ``spatial_kernel_size`` (7),
    ``grid`` (set from the features)."""

    def __init__(
        self, dim: int, rd_ratio: float = 1.0 / 16, spatial_kernel_size: int = 7, grid: tuple[int, int] | list[int] | None = None
    ) -> None:
        super().__init__()
        self.grid = tuple(grid) if grid is not None else None
        self.out_dim = dim
        self.channel = ChannelAttn(dim, rd_ratio=rd_ratio)
        self.spatial = SpatialAttn(spatial_kernel_size)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h, w = self.grid if self.grid is not None else (math.isqrt(n), math.isqrt(n))
        if h * w != n:
            raise ValueError(f"CBAM pools a token grid: {n} tokens do not form a {h}x{w} grid (use features.tokens=patch)")
        fmap = x.transpose(1, 2).reshape(b, d, h, w)
        return self.relu(self.spatial(self.channel(fmap)) + fmap).mean(dim=(2, 3))
