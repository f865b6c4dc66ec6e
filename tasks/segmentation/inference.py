"""Whole-image and sliding-window inference (mmseg ``EncoderDecoder.whole_inference`` / ``slide_inference``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

MODES = ("whole", "slide")
Predict = Callable[[torch.Tensor], torch.Tensor]  # images [B,3,h,w] -> logits [B,C,h,w]


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def predict_padded(predict: Predict, images: torch.Tensor, size_divisor: int) -> torch.Tensor:
    """``predict`` on images zero-padded bottom/right to a multiple of ``size_divisor`` (the patch
    size; mmseg's ViT pads the same way), logits cropped back to the input."""
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % size_divisor, -w % size_divisor
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    return predict(images)[..., :h, :w]


class SegInference:
    """``inference(predict, images) -> logits [B, C, H, W]`` at the size of ``images``.

    ``whole``: one forward of the image. ``slide``: ``crop_size`` windows every ``stride`` pixels
    (the last window of a row/column aligned to the border), logits summed and divided by the number
    of windows covering each pixel; a window larger than the image is the whole image.

    Config keys (``model.inference``): ``mode`` (whole | slide), ``crop_size``, ``stride``,
    ``size_divisor`` (the backbone's patch size).
    """

    def __init__(self, mode: str, crop_size: int | Sequence[int], stride: int | Sequence[int], size_divisor: int) -> None:
        if mode not in MODES:
            raise ValueError(f"inference.mode={mode!r}; valid: {', '.join(MODES)}")
        self.mode = mode
        self.crop_size, self.stride = _pair(crop_size), _pair(stride)
        self.size_divisor = size_divisor

    def __call__(self, predict: Predict, images: torch.Tensor) -> torch.Tensor:
        if self.mode == "whole":
            return predict_padded(predict, images, self.size_divisor)
        return self.slide(predict, images)

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``(y1, y2, x1, x2)`` of every window, in mmseg's order."""
        (h_crop, w_crop), (h_stride, w_stride) = self.crop_size, self.stride
        h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
        out = []
        for i in range(h_grids):
            for j in range(w_grids):
                y2, x2 = min(i * h_stride + h_crop, height), min(j * w_stride + w_crop, width)
                out.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
        return out

    def slide(self, predict: Predict, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        logits: torch.Tensor | None = None
        count = images.new_zeros((1, 1, height, width))
        for y1, y2, x1, x2 in self.windows(height, width):
            crop = predict_padded(predict, images[..., y1:y2, x1:x2], self.size_divisor)
            if logits is None:
                logits = crop.new_zeros((images.shape[0], crop.shape[1], height, width))
            logits[..., y1:y2, x1:x2] += crop
            count[..., y1:y2, x1:x2] += 1
        return logits / count
