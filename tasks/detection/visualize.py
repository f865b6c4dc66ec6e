"""Ground truth and predicted boxes and masks drawn side by side on validation images."""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
    """One distinct colour per label 1..K (index 0 unused)."""
    hues = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb(i / max(1, num_classes), 0.85, 1.0) for i in range(num_classes)]
    return [tuple(int(255 * c) for c in rgb) for rgb in hues]


def draw_instances(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor | None,
    category_names: Sequence[str],
    scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """``uint8 [3, H, W]`` image with the instances' masks (boolean ``[N, H, W]``) and labelled boxes."""
    colours = class_colours(len(category_names))
    ids = labels.tolist()
    out = image
    if masks is not None and len(ids):
        out = draw_segmentation_masks(out, masks.bool(), alpha=0.45, colors=[colours[i] for i in ids])
    if len(ids):
        text = [category_names[i - 1] + (f" {s:.2f}" if scores is not None else "") for i, s in zip(ids, (scores if scores is not None else [0.0] * len(ids)))]
        out = draw_bounding_boxes(out, boxes.float(), labels=text, colors=[colours[i] for i in ids], width=1)
    return out


def save_comparison(
    path: str | os.PathLike,
    image: torch.Tensor,
    target: dict[str, torch.Tensor],
    prediction: dict[str, torch.Tensor],
    category_names: Sequence[str],
    score_threshold: float,
) -> None:
    """``[ground truth | predictions with score >= score_threshold]`` of a float [0, 1] image as a PNG."""
    pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    truth = draw_instances(pixels, target["boxes"], target["labels"], target.get("masks"), category_names)
    keep = prediction["scores"].detach().cpu() >= score_threshold
    masks = prediction["masks"][keep, 0].detach().cpu() >= 0.5 if "masks" in prediction else None
    predicted = draw_instances(
        pixels, prediction["boxes"][keep].detach().cpu(), prediction["labels"][keep].cpu(), masks, category_names, prediction["scores"][keep].cpu()
    )
    gap = torch.full((3, pixels.shape[1], 4), 255, dtype=torch.uint8)
    both = torch.cat([truth, gap, predicted], dim=2)
    Image.fromarray(np.ascontiguousarray(both.permute(1, 2, 0).numpy())).save(path)
