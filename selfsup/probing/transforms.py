"""Image transforms of the probing protocols.

- ``probe_train_transform``: the efficient-probing / MAE linear-probe training transform
  (``RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3, bicubic)`` in MAE's TF-style variant
  ``util/crop.py`` -- one draw, clamped to the image, no retry loop -- then a horizontal flip) or,
  with ``crop: torchvision``, torchvision's crop (DINOv2's linear eval). ``augment: false`` turns it
  into the deterministic evaluation transform (Resize + CenterCrop): features can then be cached.
- ``timm_train_transform``: timm's ``create_transform`` (the V-JEPA attentive-probe recipe: AutoAugment
  'original', RandomErasing 0.25 pixel mode, bicubic RRC, flip). timm draws from Python's ``random``,
  so the wrapper seeds it from the per-sample torch RNG: augmentations stay deterministic per sample.
  ``augment: false`` is the same Resize + CenterCrop as ``probe_train_transform``'s (cached features).
- ``is_deterministic``: whether a transform is free of random steps (feature caching is then exact).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from selfsup.data.transforms import IMAGENET_MEAN, IMAGENET_STD, _mode, eval_transform

DETERMINISTIC = (T.Resize, T.CenterCrop, T.ToTensor, T.PILToTensor, T.Normalize, T.ConvertImageDtype)
CROPS = ("mae", "torchvision")


class MAERandomResizedCrop(T.RandomResizedCrop):
    """MAE's ``util/crop.py``: one area/aspect draw (log-uniform aspect), size clamped to the image."""

    @staticmethod
    def get_params(img: Any, scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
        width, height = TF.get_image_size(img)
        area = height * width
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        log_ratio = torch.log(torch.tensor(ratio))
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = min(int(round(math.sqrt(target_area * aspect))), width)
        h = min(int(round(math.sqrt(target_area / aspect))), height)
        i = torch.randint(0, height - h + 1, size=(1,)).item()
        j = torch.randint(0, width - w + 1, size=(1,)).item()
        return i, j, h, w


def probe_train_transform(
    image_size: int,
    augment: bool = True,
    crop: str = "mae",
    crop_scale: Sequence[float] = (0.08, 1.0),
    crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
    horizontal_flip: bool = True,
    interpolation: str = "bicubic",
    resize_ratio: float = 256 / 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Config keys: ``image_size``, ``augment``, ``crop`` (mae | torchvision), ``crop_scale``, ``crop_ratio``,
    ``horizontal_flip``, ``interpolation``, ``resize_ratio`` (of the ``augment: false`` transform), ``mean``, ``std``."""
    if not augment:
        return eval_transform(image_size, resize_ratio, interpolation, mean, std)
    if crop not in CROPS:
        raise ValueError(f"crop={crop!r}; valid: {', '.join(CROPS)}")
    crop_cls = MAERandomResizedCrop if crop == "mae" else T.RandomResizedCrop
    steps: list[Callable] = [crop_cls(image_size, scale=tuple(crop_scale), ratio=tuple(crop_ratio), interpolation=_mode(interpolation))]
    if horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean=tuple(mean), std=tuple(std))]
    return T.Compose(steps)


class SeedPythonRandom:
    """Run ``transform`` with Python's and NumPy's RNGs seeded from the (per-sample) torch RNG."""

    def __init__(self, transform: Callable[[Image.Image], Any]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> Any:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            return self.transform(image)
        finally:
            random.setstate(state)
            np.random.set_state(np_state)

    def __repr__(self) -> str:
        return f"SeedPythonRandom({self.transform!r})"


def timm_train_transform(
    image_size: int,
    augment: bool = True,
    auto_augment: str | None = "original",
    interpolation: str = "bicubic",
    crop_scale: Sequence[float] = (0.08, 1.0),
    crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
    horizontal_flip: bool = True,
    re_prob: float = 0.25,
    re_mode: str = "pixel",
    re_count: int = 1,
    resize_ratio: float = 256 / 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SeedPythonRandom | T.Compose:
    """timm ``create_transform(is_training=True, ...)`` (colour jitter is off when AutoAugment is on).
    Config keys: ``image_size``, ``augment`` (false: ``Resize(image_size * resize_ratio, interpolation)``
    + ``CenterCrop``, deterministic, so the features can be cached), ``auto_augment``, ``interpolation``,
    ``crop_scale``, ``crop_ratio``, ``horizontal_flip`` (p = 0.5), ``re_prob``, ``re_mode``, ``re_count``,
    ``resize_ratio`` (of the ``augment: false`` transform), ``mean``, ``std``."""
    if not augment:
        return eval_transform(image_size, resize_ratio, interpolation, mean, std)
    from timm.data import create_transform

    return SeedPythonRandom(
        create_transform(
            input_size=image_size, is_training=True, auto_augment=auto_augment, interpolation=interpolation,
            scale=tuple(crop_scale), ratio=tuple(crop_ratio), hflip=0.5 if horizontal_flip else 0.0,
            re_prob=re_prob, re_mode=re_mode, re_count=re_count, mean=tuple(mean), std=tuple(std),
        )
    )


def is_deterministic(transform: Any) -> bool:
    """True when ``transform`` is a (nested) ``Compose`` of deterministic steps only."""
    if isinstance(transform, T.Compose):
        return all(is_deterministic(t) for t in transform.transforms)
    return isinstance(transform, DETERMINISTIC)
