"""The probing DataModule: ``ImageDataModule`` plus low-shot training subsets and cached features.

``lowshot`` (a ``LowShot``, or null) restricts the training split. After ``use_features(train, val)``
(called by the probe module when the training transform is deterministic) the loaders serve
``{"features", "labels", "epoch", "batch_index", "corrupt"}`` batches from in-memory feature banks
instead of images, with the same deterministic, resumable batch order.
"""

from __future__ import annotations

import logging
from typing import Any

from torch.utils.data import DataLoader

from selfsup.data.datamodule import ImageDataModule
from selfsup.data.sampling import ResumableBatchSampler
from selfsup.probing.cache import FeatureBank, FeatureBankDataset, keep_batch
from selfsup.probing.lowshot import LowShot, SubsetSource

log = logging.getLogger("selfsup")


class ProbeDataModule(ImageDataModule):
    """Config keys: every ``ImageDataModule`` key (``configs/data/*.yaml``) and ``lowshot``."""

    def __init__(self, lowshot: LowShot | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lowshot = lowshot
        self.banks: dict[str, FeatureBank] = {}

    def _source(self, split: str):
        source = super()._source(split)
        if self.lowshot is None or not self.lowshot.active or split != self.train_split:
            return source
        indices = self.lowshot.select(source.samples)
        log.info("low-shot training subset: %d of %d images (%s)", len(indices), len(source), self.lowshot)
        return SubsetSource(source, indices)

    def use_features(self, train: FeatureBank, val: FeatureBank | None) -> None:
        self.banks = {"train": train} if val is None else {"train": train, "val": val}

    def _bank_loader(self, bank: FeatureBank, sampler: ResumableBatchSampler) -> DataLoader:
        return DataLoader(FeatureBankDataset(bank), batch_sampler=sampler, collate_fn=keep_batch, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.banks:
            return super().train_dataloader()
        rank, world = self._rank_world()
        self._train_sampler = ResumableBatchSampler(
            len(self.banks["train"]), self.batch_size, self.shuffle, self.drop_last, self.seed, rank, world
        )
        if self._resume is not None:
            self._train_sampler.resume_at(*self._resume)
        return self._bank_loader(self.banks["train"], self._train_sampler)

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.banks:
            return super().val_dataloader()
        rank, world = self._rank_world()
        sampler = ResumableBatchSampler(len(self.banks["val"]), self.val_batch_size, False, False, self.seed, rank, world)
        return self._bank_loader(self.banks["val"], sampler)
