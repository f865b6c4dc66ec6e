"""mmseg's ``FCNHead``: the UperNet auxiliary head, and (``num_convs=0``) the linear head."""

from __future__ import annotations

import torch
from torch import nn

from tasks.segmentation.conv_module import Classifier, ConvModule, resize


class FCNHead(nn.Module):
    """Select input level(s) -> ``num_convs`` 3x3 ConvModules [-> concat with the input, 3x3 ConvModule]
    -> Dropout2d -> 1x1 classifier.

    ``in_index`` is one level (``in_channels`` an int), or a list of levels that are bilinearly
    resized to the first one and concatenated (mmseg ``input_transform='resize_concat'``,
    ``in_channels`` a list). With ``num_convs=0`` the classifier reads the inputs directly:
    iBOT's linear protocol is blocks 3/5/7/11 (no neck), resize-concat to 4 x 768 channels, one
    1x1 conv (``channels`` must then be null or the summed input channels).

    Config keys (``model.segmentor.decode_head`` / ``auxiliary_head``): ``in_channels``, ``in_index``,
    ``channels``, ``num_convs``, ``concat_input``, ``num_classes``, ``dropout``, ``align_corners``.
    """

    def __init__(
        self,
        in_channels: int | list[int],
        in_index: int | list[int],
        channels: int | None,
        num_convs: int,
        concat_input: bool,
        num_classes: int,
        dropout: float,
        align_corners: bool,
    ) -> None:
        super().__init__()
        if isinstance(in_index, int) != isinstance(in_channels, int):
            raise ValueError("fcn head: in_index and in_channels must both be an int, or both lists (resize-concat)")
        if isinstance(in_index, list) and len(in_index) != len(in_channels):
            raise ValueError(f"fcn head: in_index {in_index} and in_channels {in_channels} differ in length")
        total = in_channels if isinstance(in_channels, int) else sum(in_channels)
        if num_convs == 0:
            if channels not in (None, total):
                raise ValueError(f"fcn head with num_convs=0: channels must be null or {total} (the inputs), got {channels}")
            channels = total
        elif channels is None:
            raise ValueError("fcn head: channels is required when num_convs > 0")
        self.in_index = in_index
        self.align_corners = align_corners
        convs = [ConvModule(total if i == 0 else channels, channels, 3, padding=1) for i in range(num_convs)]
        self.convs = nn.Sequential(*convs)
        self.conv_cat = ConvModule(total + channels, channels, 3, padding=1) if concat_input else None
        self.classifier = Classifier(channels, num_classes, dropout)

    def select(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if isinstance(self.in_index, int):
            return inputs[self.in_index]
        size = inputs[self.in_index[0]].shape[-2:]
        return torch.cat([resize(inputs[i], size, self.align_corners) for i in self.in_index], dim=1)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = self.select(inputs)
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.classifier(out)
