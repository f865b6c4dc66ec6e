"""ViTDet's simple feature pyramid: p2-p6 from the last map of a plain ViT.

As detectron2 ``SimpleFeaturePyramid`` (spec section 4a), on the backbone's stride-``p`` map of
width ``d``, one branch per scale factor:

* 4.0: ConvT(d, d/2, 2, 2) -> LN -> GELU -> ConvT(d/2, d/4, 2, 2)
* 2.0: ConvT(d, d/2, 2, 2)
* 1.0: identity
* 0.5: MaxPool(2, 2)
* 0.25: MaxPool(4, 4) (not in ViTDet: lets a patch-8 ViT reach stride 32)

then Conv1x1(-> C, no bias) + LN and Conv3x3(C, no bias) + LN per branch (``norm: ""`` drops the LN
and gives the convs a bias), and ``top_block`` adds p6 = max_pool2d(p5, 1, stride 2). Outputs are
named ``p<log2 stride>``: with a patch-16 ViT and scales (4, 2, 1, 0.5) that is p2-p5 at strides
4-32 and p6 at 64. LN is a channel LayerNorm (eps 1e-6) like detectron2's.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

NORMS = ("LN", "")


def _norm(kind: str, channels: int) -> nn.Module:
    return LayerNorm2d(channels, eps=1e-6) if kind == "LN" else nn.Identity()


def _resample(scale: float, dim: int, norm: str) -> tuple[list[nn.Module], int]:
    if scale == 4.0:
        return [nn.ConvTranspose2d(dim, dim // 2, 2, 2), _norm(norm, dim // 2), nn.GELU(), nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2)], dim // 4
    if scale == 2.0:
        return [nn.ConvTranspose2d(dim, dim // 2, 2, 2)], dim // 2
    if scale == 1.0:
        return [], dim
    if scale == 0.5:
        return [nn.MaxPool2d(2, 2)], dim
    if scale == 0.25:
        return [nn.MaxPool2d(4, 4)], dim
    raise ValueError(f"scale_factors: {scale} is not supported; use 4.0, 2.0, 1.0, 0.5 or 0.25")


class SimpleFeaturePyramid(nn.Module):
    """Multi-scale maps from one ViT map (see the module docstring); ``out_channels`` for torchvision.

    Config keys (``model.detector.backbone``): ``net`` (a module with ``out_channels`` and ``stride``
    returning one ``[B, d, H/stride, W/stride]`` map), ``out_channels``, ``scale_factors``,
    ``top_block`` (add p6), ``norm`` (LN | "").
    """

    def __init__(self, net: nn.Module, out_channels: int, scale_factors: Sequence[float], top_block: bool, norm: str) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}; valid: 'LN' or ''")
        dim, stride = net.out_channels, net.stride
        strides = [stride / s for s in scale_factors]
        stages = [math.log2(s) for s in strides]
        if any(s != int(s) for s in stages) or any(b - a != 1 for a, b in zip(stages, stages[1:])):
            raise ValueError(
                f"scale_factors {list(scale_factors)} on a stride-{stride} map give strides {strides}: they must be "
                "powers of two doubling from level to level (patch 16: [4, 2, 1, 0.5]; patch 8: [2, 1, 0.5, 0.25])"
            )
        self.net = net
        self.out_channels = out_channels
        self.stage_names: list[str] = []
        bias = norm == ""
        for scale, stage in zip(scale_factors, stages):
            layers, width = _resample(float(scale), dim, norm)
            layers += [
                nn.Conv2d(width, out_channels, 1, bias=bias), _norm(norm, out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias), _norm(norm, out_channels),
            ]
            name = f"simfp_{int(stage)}"
            self.add_module(name, nn.Sequential(*layers))
            self.stage_names.append(name)
        self.strides = [int(s) for s in strides]
        self.top_block = top_block
        self.feature_names = [f"p{int(s)}" for s in stages]
        if top_block:
            self.strides.append(self.strides[-1] * 2)
            self.feature_names.append(f"p{int(stages[-1]) + 1}")

    @property
    def size_divisibility(self) -> int:
        """Inputs must be a multiple of this (the largest stride before the top block)."""
        return self.strides[-2] if self.top_block else self.strides[-1]

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.net(images)
        maps = [getattr(self, name)(features) for name in self.stage_names]
        if self.top_block:
            maps.append(F.max_pool2d(maps[-1], kernel_size=1, stride=2))
        return OrderedDict(zip(self.feature_names, maps))
