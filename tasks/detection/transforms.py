"""Detection augmentation with ``torchvision.transforms.v2`` on an image, its boxes and its masks.

``lsj_train_transform`` is ViTDet's large-scale jitter (detectron2 ``coco_loader_lsj.py``): random
horizontal flip, then resize so the image fits a ``scale x image_size`` square (scale uniform in
``scale_range``), then a random crop of at most ``image_size x image_size`` with no padding (the
model pads every image to the square), then boxes recomputed from the cropped masks
(``recompute_boxes``; a crop cuts an object, and the tight box of what is left is not the clipped
box) and degenerate instances removed. ``eval_transform`` only converts: the detector itself resizes
test images (longest side ``image_size``) and maps its predictions back.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

CROP_OFFSETS = ("shared", "independent")


class FixedSizeCrop(v2.Transform):
    """Crop to ``min(size, height) x min(size, width)`` at a random offset, never padding.

    ``offsets="shared"`` is detectron2's ``FixedSizeCrop``: ONE uniform draw ``u`` places the crop at
    ``round(u * (H - h)), round(u * (W - w))``, so the vertical and horizontal offsets move together.
    ``offsets="independent"`` draws one ``u`` per axis.
    """

    def __init__(self, size: int, offsets: str = "shared") -> None:
        super().__init__()
        if offsets not in CROP_OFFSETS:
            raise ValueError(f"crop_offsets={offsets!r}; valid: {', '.join(CROP_OFFSETS)}")
        self.size = size
        self.offsets = offsets

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        crop_h, crop_w = min(self.size, height), min(self.size, width)
        draws = torch.rand(1 if self.offsets == "shared" else 2, dtype=torch.float64).tolist()
        u_y, u_x = draws[0], draws[-1]
        return {"top": round((height - crop_h) * u_y), "left": round((width - crop_w) * u_x), "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight ``[N, 4]`` XYXY boxes of ``[N, H, W]`` masks (x2 = last column + 1); zeros for empty masks."""
    n = masks.shape[0]
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    any_col = masks.any(dim=1)  # [N, W]
    any_row = masks.any(dim=2)  # [N, H]
    cols = torch.arange(masks.shape[2], device=masks.device)
    rows = torch.arange(masks.shape[1], device=masks.device)
    big = max(masks.shape[1], masks.shape[2]) + 1
    x1 = torch.where(any_col, cols, big).amin(dim=1)
    x2 = torch.where(any_col, cols, -1).amax(dim=1) + 1
    y1 = torch.where(any_row, rows, big).amin(dim=1)
    y2 = torch.where(any_row, rows, -1).amax(dim=1) + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return torch.where(any_col.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


class RecomputeBoxes(v2.Transform):
    """Replace the boxes of a target by the tight boxes of its masks (detectron2 ``recompute_boxes``)."""

    def forward(self, *inputs: Any) -> Any:
        image, target = inputs if len(inputs) == 2 else inputs[0]
        if "masks" in target and "boxes" in target:
            boxes = boxes_from_masks(target["masks"].bool())
            target["boxes"] = tv_tensors.wrap(boxes, like=target["boxes"])
        return image, target


def lsj_train_transform(
    image_size: int,
    scale_range: tuple[float, float],
    flip_prob: float,
    crop_offsets: str,
    recompute_boxes: bool,
) -> v2.Compose:
    """Large-scale jitter (see the module docstring). Config keys: ``image_size``, ``scale_range``,
    ``flip_prob``, ``crop_offsets`` (shared = detectron2 | independent), ``recompute_boxes``.
    Instances whose box is under 1 pixel wide or high are dropped (torchvision's minimum; detectron2
    drops under 1e-5, which with ``recompute_boxes`` is the same: mask boxes are whole pixels)."""
    steps: list[v2.Transform] = [
        v2.RandomHorizontalFlip(flip_prob),
        v2.ScaleJitter(target_size=(image_size, image_size), scale_range=tuple(scale_range), antialias=True),
        FixedSizeCrop(image_size, crop_offsets),
    ]
    if recompute_boxes:
        steps.append(RecomputeBoxes())
    steps += [
        v2.SanitizeBoundingBoxes(),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
    ]
    return v2.Compose(steps)


def eval_transform() -> v2.Compose:
    """Images to float in [0, 1]; boxes and masks untouched (the detector resizes and maps back)."""
    return v2.Compose([v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)])
