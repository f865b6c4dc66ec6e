"""Building blocks shared by the decode heads, with mmcv's defaults and initialisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvModule(nn.Sequential):
    """mmcv ``ConvModule`` with ``norm_cfg=BN, act_cfg=ReLU``: Conv2d (no bias, since a norm follows)
    -> BatchNorm2d -> ReLU; conv weights Kaiming-normal (fan_out, relu), norm weight 1, bias 0."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        norm = nn.BatchNorm2d(out_channels)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(norm.weight)
        nn.init.zeros_(norm.bias)
        super().__init__(conv, norm, nn.ReLU(inplace=True))


class Classifier(nn.Sequential):
    """mmseg ``BaseDecodeHead.cls_seg``: Dropout2d (if ``dropout > 0``) -> 1x1 conv, weights N(0, 0.01), bias 0."""

    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        conv = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(conv.weight, 0.0, 0.01)
        nn.init.zeros_(conv.bias)
        super().__init__(*([nn.Dropout2d(dropout)] if dropout > 0 else []), conv)


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize (mmseg ``resize``); a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)
