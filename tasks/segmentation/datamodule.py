"""The segmentation DataModule: ADE20K-format pairs with the sampling and resume of ``ImageDataModule``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from selfsup.data.datamodule import ImageDataModule
from selfsup.data.embedded.ade20k import ensure_ade20k
from tasks.segmentation.dataset import ADE20KSource


class SegmentationCollator:
    """``list[sample] -> {"images", "labels", "indices", "epoch", "batch_index", "corrupt"}``.

    ``images`` ``[B,3,H,W]`` / ``labels`` ``[B,H,W]`` are stacked when every sample has the same size
    (training crops, or a fixed-size validation set) and are lists otherwise (ADE20K validation
    images keep their own sizes). ``indices`` are the dataset indices (for names in overlays).
    """

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        images = [s["image"][0] for s in samples]
        labels = [s["image"][1] for s in samples]
        same = all(x.shape == images[0].shape for x in images) and all(y.shape == labels[0].shape for y in labels)
        key = samples[0]["key"]
        return {
            "images": torch.stack(images) if same else images,
            "labels": torch.stack(labels) if same else labels,
            "indices": torch.tensor([s["label"] for s in samples], dtype=torch.long),
            "epoch": key.epoch,
            "batch_index": key.batch,
            "corrupt": sum(s["corrupt"] for s in samples),
        }


class SegmentationDataModule(ImageDataModule):
    """ADE20K-format semantic segmentation: the embedded export or a real ADE20K folder.

    Config keys (``configs/data/ade20k*.yaml``): ``source`` (embedded | ade20k), ``root``,
    ``train_split``, ``val_split``, ``image_size`` (training crop; the backbone reads it),
    ``num_classes``, ``class_names`` (null: ``class_<i>``), ``reduce_zero_label``, ``ignore_index``,
    ``train_transform``, ``val_transform``, ``batch_size`` (per process), ``val_batch_size``,
    ``num_workers``, ``pin_memory``, ``persistent_workers``, ``shuffle``, ``drop_last``, ``seed``,
    ``skip_corrupt``, ``embedded`` (generator settings of ``ensure_ade20k``).
    """

    SOURCES = ("embedded", "ade20k")
    embedded_writer = staticmethod(ensure_ade20k)

    def __init__(
        self,
        source: str,
        root: str | None,
        train_split: str,
        val_split: str | None,
        image_size: int,
        num_classes: int,
        class_names: list[str] | None,
        reduce_zero_label: bool,
        ignore_index: int,
        train_transform: Callable,
        val_transform: Callable | None,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        pin_memory: bool | None,
        persistent_workers: bool,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        skip_corrupt: bool,
        embedded: dict[str, Any] | None,
    ) -> None:
        if root is None:
            raise ValueError("data.root is required: pass data.root=/path/to/ADEChallengeData2016, or use data=ade20k_embedded")
        names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"data.class_names has {len(names)} names but data.num_classes={num_classes}")
        super().__init__(
            source=source, root=root, train_split=train_split, val_split=val_split, image_size=image_size,
            train_transform=train_transform, val_transform=val_transform, mask_sampler=None,
            batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, shuffle=shuffle, drop_last=drop_last, seed=seed,
            skip_corrupt=skip_corrupt, embedded=embedded,
        )
        self.class_names = names
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index

    def _source(self, split: str) -> ADE20KSource:
        return ADE20KSource(self.root, split, self.class_names, self.reduce_zero_label, self.ignore_index)

    def _collator(self, masks: bool) -> SegmentationCollator:
        return SegmentationCollator()

    def sample_name(self, index: int) -> str:
        """File stem of validation sample ``index`` (overlay file names)."""
        self.setup()
        return self.val_set.source.name(index)
