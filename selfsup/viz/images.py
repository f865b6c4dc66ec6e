"""A few fixed images of a data module for pictures: evenly spaced over the split, deterministic."""

from __future__ import annotations

import numpy as np
import torch

from selfsup.data.datamodule import ImageDataModule
from selfsup.viz.canvas import normalization_of, to_uint8


def sample_images(datamodule: ImageDataModule, count: int) -> tuple[torch.Tensor, np.ndarray]:
    """``(normalised [count, 3, H, W], uint8 [count, H, W, 3])`` from the validation split (the
    training split if there is none), through the validation transform when there is one."""
    datamodule.setup()
    dataset = datamodule.val_set or datamodule.train_set
    transform = datamodule.val_transform or datamodule.train_transform
    picks = np.linspace(0, len(dataset.source) - 1, num=min(count, len(dataset.source))).round().astype(int)
    images = torch.stack([transform(dataset.source.load(int(i))[0]) for i in picks])
    return images, to_uint8(images, *normalization_of(transform))
