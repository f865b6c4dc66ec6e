"""DELF/DOLG spatial attention pooling (``SpatialAttention2d`` of ``poolings/dolg/dolg.py``, no ASPP).

Tokens on their grid -> 1x1 conv (D -> D, bias) -> BatchNorm2d. Values: the BN output L2-normalised
over channels; scores: ``softplus(conv1x1_{D->1}(ReLU(BN output)))``; output: the spatial mean of
``score * value``. Convs are initialised ``normal(0, sqrt(2 / fan_out))`` (their biases keep the
PyTorch default), as ``net.init_weights``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SpatialAttention2d(nn.Module):
    """Config keys (``configs/probe/dolg.yaml``): ``dim``, ``hidden_dim`` (null: D), ``activation``
    (relu | leaky_relu), ``bn_eps``, ``bn_momentum``, ``grid`` (set from the features)."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int | None = None,
        activation: str = "relu",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        grid: tuple[int, int] | list[int] | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"probe.activation={activation!r}; valid: relu, leaky_relu")
        hidden = hidden_dim or dim
        self.grid = tuple(grid) if grid is not None else None
        self.out_dim = hidden
        self.conv1 = nn.Conv2d(dim, hidden, 1, 1)
        self.bn = nn.BatchNorm2d(hidden, eps=bn_eps, momentum=bn_momentum)
        self.act1 = nn.ReLU() if activation == "relu" else nn.LeakyReLU()
        self.conv2 = nn.Conv2d(hidden, 1, 1, 1)
        self.softplus = nn.Softplus(beta=1, threshold=20)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, std=math.sqrt(2.0 / conv.out_channels))

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h, w = self.grid if self.grid is not None else (math.isqrt(n), math.isqrt(n))
        if h * w != n:
            raise ValueError(f"DOLG pools a token grid: {n} tokens do not form a {h}x{w} grid (use features.tokens=patch)")
        return x.transpose(1, 2).reshape(b, d, h, w)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.bn(self.conv1(self._map(x)))
        score = self.softplus(self.conv2(self.act1(fmap)))  # [B, 1, H, W]
        return (score * F.normalize(fmap, p=2, dim=1)).flatten(2).mean(dim=2), score

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[1].flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]
