"""Image transforms. The pretraining one is the official I-JEPA pipeline (spec a.1)."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERPOLATION = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def _mode(name: str) -> T.InterpolationMode:
    if name not in _INTERPOLATION:
        raise ValueError(f"interpolation={name!r}; valid: {', '.join(_INTERPOLATION)}")
    return _INTERPOLATION[name]


def jepa_pretrain_transform(
    image_size: int,
    crop_scale: Sequence[float] = (0.3, 1.0),
    horizontal_flip: bool = False,
    interpolation: str = "bilinear",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """RandomResizedCrop(scale=crop_scale, ratio 3/4-4/3) [+ flip] -> ToTensor -> Normalize.

    The official configs use crop_scale (0.3, 1.0) and no flip, colour jitter or blur.
    Config keys: ``image_size``, ``crop_scale``, ``horizontal_flip``, ``interpolation``, ``mean``, ``std``.
    """
    steps = [T.RandomResizedCrop(image_size, scale=tuple(crop_scale), interpolation=_mode(interpolation))]
    if horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean=tuple(mean), std=tuple(std))]
    return T.Compose(steps)


def eval_transform(
    image_size: int,
    resize_ratio: float = 256 / 224,
    interpolation: str = "bicubic",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Resize(int(image_size * resize_ratio)) -> CenterCrop(image_size) -> ToTensor -> Normalize.

    Config keys: ``image_size``, ``resize_ratio``, ``interpolation``, ``mean``, ``std``.
    """
    return T.Compose(
        [
            T.Resize(int(image_size * resize_ratio), interpolation=_mode(interpolation)),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(mean=tuple(mean), std=tuple(std)),
        ]
    )
