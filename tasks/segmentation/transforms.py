"""The ADE20K training and test pipelines of mmseg, in ``torchvision.transforms.v2``.

Training (mmseg ``configs/_base_/datasets/ade20k.py`` + the data preprocessor)::

    RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio)   image bilinear, labels nearest
    RandomCrop(512, cat_max_ratio=0.75)      up to 10 redraws until no class covers >= 75 % of the crop
    RandomFlip(0.5)
    PhotoMetricDistortion()                  brightness, contrast, saturation, hue (each with p = 0.5)
    Normalize(ImageNet mean/std) -> Pad to 512 (image 0, labels ignore)

Test: ``Resize(scale=(2048, 512), keep_ratio)`` of the image only; predictions are resized back to
the original label map, which is never resampled (metrics at the annotation's resolution).

Random numbers come from torch's global generator, which ``KeyedDataset`` seeds per sample, so
augmentations are deterministic for any number of workers and across resumes. A sample is a pair
``(image, label map)`` through the whole pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

from selfsup.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _coin() -> bool:
    return bool(torch.randint(0, 2, ()).item())


def rescale_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv ``rescale_size``: the largest size with long edge <= max(scale) and short edge <= min(scale)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


class ToSegTensors:
    """``(PIL image, int64 label array)`` -> ``(tv_tensors.Image uint8, tv_tensors.Mask int64)``."""

    def __call__(self, sample: tuple[Image.Image, np.ndarray]) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image, label = sample
        return tv_tensors.Image(F.pil_to_tensor(image)), tv_tensors.Mask(torch.as_tensor(label, dtype=torch.int64))


class RandomResize(v2.Transform):
    """mmseg ``RandomResize(scale, ratio_range, keep_ratio=True)``; ``ratio_range=None`` is a fixed
    keep-ratio ``Resize(scale)``. Images bilinear without antialiasing (as cv2), label maps nearest."""

    def __init__(self, scale: Sequence[int], ratio_range: Sequence[float] | None) -> None:
        super().__init__()
        self.scale = tuple(int(s) for s in scale)
        self.ratio_range = tuple(ratio_range) if ratio_range is not None else None

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        ratio = 1.0 if self.ratio_range is None else _uniform(*self.ratio_range)
        scale = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        return {"size": list(rescale_size(*query_size(flat_inputs), scale))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(
            F.resize, inpt, size=params["size"], interpolation=v2.InterpolationMode.BILINEAR, antialias=False
        )


class RandomCropCatMax(v2.Transform):
    """mmseg ``RandomCrop(crop_size, cat_max_ratio)``: a crop of at most ``crop_size`` (smaller images
    are kept whole); with ``cat_max_ratio < 1`` the crop is redrawn up to 10 times until it holds at
    least two non-ignored classes and none covers ``cat_max_ratio`` of its labelled pixels."""

    def __init__(self, crop_size: int | Sequence[int], cat_max_ratio: float, ignore_index: int) -> None:
        super().__init__()
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def _draw(self, height: int, width: int) -> tuple[int, int]:
        top = int(torch.randint(0, max(height - self.crop_size[0], 0) + 1, ()))
        left = int(torch.randint(0, max(width - self.crop_size[1], 0) + 1, ()))
        return top, left

    def _balanced(self, mask: torch.Tensor, top: int, left: int) -> bool:
        crop = mask[..., top : top + self.crop_size[0], left : left + self.crop_size[1]]
        labels, counts = torch.unique(crop, return_counts=True)
        counts = counts[labels != self.ignore_index]
        return len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        top, left = self._draw(height, width)
        masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
        if self.cat_max_ratio < 1.0 and masks:
            for _ in range(10):
                if self._balanced(masks[0], top, left):
                    break
                top, left = self._draw(height, width)
        return {
            "top": top,
            "left": left,
            "height": min(self.crop_size[0], height - top),
            "width": min(self.crop_size[1], width - left),
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class PhotoMetricDistortion(v2.Transform):
    """mmseg ``PhotoMetricDistortion`` on the uint8 image (label maps pass through): brightness
    ``+U(-delta, delta)``, contrast ``xU(range)`` either first or last (p = 0.5 each), saturation ``x``
    and hue ``+randint(-hue_delta, hue_delta)`` (of 180, numpy's exclusive upper bound) in HSV; every
    step applied with p = 0.5 and clipped/truncated to uint8 as mmseg does. HSV is computed in float
    (mmseg uses cv2's 8-bit HSV), so pixel values can differ by rounding.

    Config keys: ``brightness_delta``, ``contrast_range``, ``saturation_range``, ``hue_delta``.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        super().__init__()
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params: dict[str, Any] = {"brightness": None, "contrast": None, "saturation": None, "hue": None}
        if _coin():
            params["brightness"] = _uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = _coin()  # mmseg: mode == 1
        if contrast_first and _coin():
            params["contrast"] = _uniform(*self.contrast_range)
        if _coin():
            params["saturation"] = _uniform(*self.saturation_range)
        if _coin():
            params["hue"] = int(torch.randint(-self.hue_delta, self.hue_delta, ()))
        if not contrast_first and _coin():
            params["contrast"] = _uniform(*self.contrast_range)
        params["contrast_first"] = contrast_first
        return params

    @staticmethod
    def _to_uint8(x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, 255).to(torch.uint8)  # float -> uint8 truncates, as numpy astype

    def _hsv(self, img: torch.Tensor, saturation: float | None, hue: int | None) -> torch.Tensor:
        h, s, v = _rgb_to_hsv(img.float() / 255.0).unbind(-3)
        if saturation is not None:
            s = (s * saturation).clamp(0, 1)
        if hue is not None:
            h = torch.remainder(h + hue / 180.0, 1.0)
        return self._to_uint8(_hsv_to_rgb(torch.stack([h, s, v], dim=-3)) * 255.0 + 0.5)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        img = inpt.as_subclass(torch.Tensor)
        if params["brightness"] is not None:
            img = self._to_uint8(img.float() + params["brightness"])
        if params["contrast_first"] and params["contrast"] is not None:
            img = self._to_uint8(img.float() * params["contrast"])
        if params["saturation"] is not None:
            img = self._hsv(img, params["saturation"], None)
        if params["hue"] is not None:
            img = self._hsv(img, None, params["hue"])
        if not params["contrast_first"] and params["contrast"] is not None:
            img = self._to_uint8(img.float() * params["contrast"])
        return tv_tensors.wrap(img, like=inpt)


class PadToSize(v2.Transform):
    """Pad bottom/right up to ``size`` (the data preprocessor's ``size=crop_size``): images with
    ``image_fill`` (0 after normalisation), label maps with ``ignore_index``."""

    def __init__(self, size: int | Sequence[int], ignore_index: int, image_fill: float = 0.0) -> None:
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.ignore_index = ignore_index
        self.image_fill = image_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        return {"padding": [0, 0, max(self.size[1] - width, 0), max(self.size[0] - height, 0)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.ignore_index if isinstance(inpt, tv_tensors.Mask) else self.image_fill
        return self._call_kernel(F.pad, inpt, padding=params["padding"], fill=fill)


class ToPlainPair:
    """``(tv_tensors.Image, tv_tensors.Mask)`` -> ``(float image [3,H,W], int64 labels [H,W])``."""

    def __call__(self, sample: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = sample
        return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor).long()


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(list(mean), list(std))]


def seg_train_transform(
    image_size: int,
    scale: Sequence[int],
    ratio_range: Sequence[float],
    cat_max_ratio: float,
    flip_prob: float,
    photometric: PhotoMetricDistortion | None,
    ignore_index: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """The mmseg ADE20K training pipeline (module docstring) ending in ``image_size`` crops.

    Config keys (``data.train_transform``): ``image_size`` (crop), ``scale`` ([long, short] edge bound
    of the resize, ADE20K [2048, 512]), ``ratio_range``, ``cat_max_ratio``, ``flip_prob``,
    ``photometric`` (a ``PhotoMetricDistortion`` node or null), ``ignore_index``, ``mean``, ``std``.
    """
    steps: list[Any] = [
        ToSegTensors(),
        RandomResize(scale, ratio_range),
        RandomCropCatMax(image_size, cat_max_ratio, ignore_index),
        v2.RandomHorizontalFlip(flip_prob),
    ]
    if photometric is not None:
        steps.append(photometric)
    steps += [*_normalize(mean, std), PadToSize(image_size, ignore_index), ToPlainPair()]
    return v2.Compose(steps)


class SegEvalTransform:
    """Test pipeline: the image is resized (keep ratio, ``scale`` bound) and normalised; the label map
    is returned untouched, at the annotation's resolution.

    Config keys (``data.val_transform``): ``scale``, ``mean``, ``std``.
    """

    def __init__(self, scale: Sequence[int], mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = list(mean), list(std)
        self.image = v2.Compose([RandomResize(scale, None), *_normalize(mean, std)])

    def __call__(self, sample: tuple[Image.Image, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = ToSegTensors()(sample)
        return self.image(image).as_subclass(torch.Tensor), label.as_subclass(torch.Tensor)
