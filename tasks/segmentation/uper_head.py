"""UPerHead (Xiao et al. 2018) with the pyramid pooling module, as mmseg's ``UPerHead``."""

from __future__ import annotations

import torch
from torch import nn

from tasks.segmentation.conv_module import Classifier, ConvModule, resize


class PyramidPooling(nn.Module):
    """mmseg ``PPM``: per scale ``s``, AdaptiveAvgPool(s) -> 1x1 ConvModule -> bilinear back up."""

    def __init__(self, pool_scales: list[int], in_channels: int, channels: int, align_corners: bool) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels, channels, 1)) for s in pool_scales
        )
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [resize(stage(x), x.shape[-2:], self.align_corners) for stage in self.stages]


class UPerHead(nn.Module):
    """Top level: PPM + 3x3 bottleneck; other levels: 1x1 lateral convs; top-down bilinear addition;
    3x3 FPN convs; everything upsampled to the finest level, concatenated, 3x3 ``fpn_bottleneck``,
    Dropout2d, 1x1 classifier. Output stride = that of the first input level.

    Config keys (``model.segmentor.decode_head``): ``in_channels`` (per level), ``channels``,
    ``pool_scales``, ``num_classes``, ``dropout``, ``align_corners``.
    """

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        pool_scales: list[int],
        num_classes: int,
        dropout: float,
        align_corners: bool,
    ) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.psp = PyramidPooling(pool_scales, in_channels[-1], channels, align_corners)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, padding=1) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)
        self.classifier = Classifier(channels, num_classes, dropout)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        top = inputs[-1]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        laterals.append(self.bottleneck(torch.cat([top, *self.psp(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:], self.align_corners)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [resize(x, outs[0].shape[-2:], self.align_corners) for x in outs]
        return self.classifier(self.fpn_bottleneck(torch.cat(outs, dim=1)))
