"""Multi-level RoIAlign as ViTDet pools: ``aligned=True`` (detectron2 ``ROIAlignV2``), known strides.

torchvision's ``MultiScaleRoIAlign`` always calls ``roi_align(..., aligned=False)`` (the legacy
RoIAlign, whose sampling grid is shifted by half a pixel) and infers each level's scale from the
first batch it sees and caches it: with large-scale jitter, where images are smaller than the
padded batch, that first guess can be wrong for the rest of the run. ``LevelRoIAlign`` takes the
pyramid's strides instead and exposes ``aligned``; level assignment is detectron2's
``assign_boxes_to_levels``: ``floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))``
clamped to the available levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.boxes import box_area


def assign_levels(boxes: list[torch.Tensor], min_level: int, max_level: int, canonical_box_size: float, canonical_level: int) -> torch.Tensor:
    """Pyramid level index (0 = ``min_level``) of every box, in order."""
    sizes = torch.sqrt(torch.cat([box_area(b) for b in boxes]))
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + 1e-8))
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level


class LevelRoIAlign(MultiScaleRoIAlign):
    """RoIAlign over named pyramid levels with explicit ``strides`` and an ``aligned`` switch.

    Config keys (set by ``vitdet_mask_rcnn``): ``featmap_names``, ``output_size``, ``sampling_ratio``
    (0 = adaptive, as ViTDet), ``strides`` (one per name), ``aligned`` (True = ViTDet / ROIAlignV2;
    False = torchvision's legacy pooling), ``canonical_box_size``, ``canonical_level``.
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int,
        sampling_ratio: int,
        strides: Sequence[int],
        aligned: bool,
        canonical_box_size: float,
        canonical_level: int,
    ) -> None:
        super().__init__(list(featmap_names), output_size, sampling_ratio, canonical_scale=int(canonical_box_size), canonical_level=canonical_level)
        if len(strides) != len(featmap_names):
            raise ValueError(f"one stride per feature map: {list(featmap_names)} vs {list(strides)}")
        self.strides = [int(s) for s in strides]
        self.aligned = aligned
        self.canonical_box_size = float(canonical_box_size)
        self.min_level, self.max_level = int(math.log2(self.strides[0])), int(math.log2(self.strides[-1]))

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        features = [x[name] for name in self.featmap_names]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, 1.0 / self.strides[0], self.sampling_ratio, self.aligned)
        levels = assign_levels(boxes, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level)
        out = features[0].new_zeros((rois.shape[0], features[0].shape[1], *self.output_size))
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            index = torch.where(levels == level)[0]
            pooled = roi_align(feature, rois[index], self.output_size, 1.0 / stride, self.sampling_ratio, self.aligned)
            out[index] = pooled.to(out.dtype)
        return out
