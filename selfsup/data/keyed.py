"""A dataset addressed by ``SampleKey``: deterministic per-sample augmentation and corrupt-file policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from PIL import Image
from torch.utils.data import Dataset

from selfsup.data.images import CorruptImageError
from selfsup.data.sampling import SampleKey
from selfsup.utils.seeding import derive_seed

MAX_CONSECUTIVE_CORRUPT = 100


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[Image.Image, int]: ...


class KeyedDataset(Dataset):
    """``dataset[SampleKey] -> {"image", "label", "key", "corrupt"}``.

    The transform of a sample runs under a private RNG seeded from ``(seed, epoch, index)``, so its
    random crop does not depend on which worker or process draws it, or on a resume. With
    ``skip_corrupt`` an unreadable file is replaced by the next readable one (deterministically) and
    counted in ``"corrupt"``; without it the error names the file.
    """

    def __init__(
        self, source: ImageSource, transform: Callable[[Image.Image], Any], seed: int, skip_corrupt: bool
    ) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, index: int) -> tuple[Image.Image, int, int]:
        skipped = 0
        while True:
            try:
                image, label = self.source.load(index)
                return image, label, skipped
            except CorruptImageError:
                if not self.skip_corrupt or skipped >= MAX_CONSECUTIVE_CORRUPT:
                    raise
                skipped += 1
                index = (index + 1) % len(self.source)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        image, label, skipped = self._load(key.index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, key.epoch, key.index))
            tensor = self.transform(image)
        return {"image": tensor, "label": label, "key": key, "corrupt": skipped}
