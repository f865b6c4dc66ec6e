"""The 4-scale neck that turns single-stride ViT features into a pyramid (BEiT/MAE/iBOT ``fpn1..4``)."""

from __future__ import annotations

import torch
from torch import nn

RESCALES = (4, 2, 1, 0.5, 0.25)


def _rescale(embed_dim: int, factor: float) -> nn.Module:
    if factor == 4:  # stride 16 -> 4
        return nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
            nn.BatchNorm2d(embed_dim),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
        )
    if factor == 2:
        return nn.Sequential(nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2))
    if factor == 1:
        return nn.Identity()
    return nn.MaxPool2d(kernel_size=int(1 / factor), stride=int(1 / factor))


class MultiScaleNeck(nn.Module):
    """mmseg ``Feature2Pyramid``: level ``i`` of the encoder output is rescaled by ``rescales[i]``.

    ``[4, 2, 1, 0.5]`` (patch 16 -> strides 4, 8, 16, 32) is ConvT-BN-GELU-ConvT, ConvT, identity,
    max-pool 2; ``[2, 1, 0.5, 0.25]`` is the same pyramid for patch 8 (iBOT's patch-8 variant).
    BatchNorm is SyncBN in the references: set ``trainer.sync_batchnorm=true`` for several processes.

    Config keys (``model.segmentor.neck``): ``embed_dim``, ``rescales``.
    """

    def __init__(self, embed_dim: int, rescales: list[float]) -> None:
        super().__init__()
        bad = [r for r in rescales if r not in RESCALES]
        if bad:
            raise ValueError(f"neck.rescales={list(rescales)}: each must be one of {RESCALES}")
        self.rescales = list(rescales)
        self.levels = nn.ModuleList(_rescale(embed_dim, r) for r in rescales)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.levels):
            raise ValueError(f"the neck has {len(self.levels)} levels but got {len(features)} feature maps")
        return [level(x) for level, x in zip(self.levels, features)]
