"""The detection DataModule: COCO-format instances (the embedded export or real COCO 2017).

Batches are ``{"images": [3,H,W] float list, "targets": list of {"boxes", "labels", "masks",
"image_id"}, "epoch", "batch_index", "corrupt"}`` (images keep their own sizes: the detector pads).
Sampling is the project's ``ResumableBatchSampler`` (deterministic, distributed by this module,
resumable mid-epoch; the position is in the checkpoint) and each sample's augmentation runs under a
generator seeded by ``(seed, epoch, index)``, so runs are reproducible for any number of workers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from selfsup.data.embedded.cache import embedded_root
from selfsup.data.embedded.coco import ensure_coco
from selfsup.data.images import CorruptImageError
from selfsup.data.keyed import MAX_CONSECUTIVE_CORRUPT
from selfsup.data.position import TrainingPosition
from selfsup.data.sampling import ResumableBatchSampler, SampleKey
from selfsup.utils.seeding import derive_seed
from tasks.detection.coco_dataset import CocoInstances

SOURCES = ("embedded", "coco")


def _plain(value: Any) -> Any:
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


class KeyedDetectionDataset(Dataset):
    """``dataset[SampleKey] -> {"image", "target", "key", "corrupt"}`` with seeded augmentation.

    With ``skip_corrupt`` an unreadable image is replaced by the next readable one and counted.
    """

    def __init__(self, source: CocoInstances, transform: Callable, seed: int, skip_corrupt: bool) -> None:
        self.source, self.transform, self.seed, self.skip_corrupt = source, transform, seed, skip_corrupt

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        index, skipped = key.index, 0
        while True:
            try:
                image, target = self.source.load(index)
                break
            except CorruptImageError:
                if not self.skip_corrupt or skipped >= MAX_CONSECUTIVE_CORRUPT:
                    raise
                skipped, index = skipped + 1, (index + 1) % len(self.source)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, key.epoch, key.index))
            image, target = self.transform(image, target)
        target = {k: _plain(v) for k, v in target.items()}
        return {"image": _plain(image), "target": target, "key": key, "corrupt": skipped}


def collate_detection(samples: list[dict[str, Any]]) -> dict[str, Any]:
    key = samples[0]["key"]
    return {
        "images": [s["image"] for s in samples],
        "targets": [s["target"] for s in samples],
        "epoch": key.epoch,
        "batch_index": key.batch,
        "corrupt": sum(s["corrupt"] for s in samples),
    }


class CocoDataModule(TrainingPosition, L.LightningDataModule):
    """COCO-format instance segmentation data.

    Config keys (``configs/data/{embedded_coco,coco}.yaml``): ``source`` (embedded | coco), ``root``,
    ``train_split``, ``val_split`` (annotation files ``annotations/instances_<split>.json``, images
    in ``<split>/``), ``image_size`` (training crop = test longest side; the transforms and the
    detector read it), ``num_classes`` (checked against the annotation file), ``train_transform``,
    ``val_transform``, ``batch_size`` (per process), ``val_batch_size``, ``num_workers``,
    ``pin_memory`` (null: on with CUDA), ``persistent_workers``, ``shuffle``, ``drop_last``, ``seed``,
    ``skip_corrupt``, ``filter_empty`` (drop training images without instances, as detectron2),
    ``embedded`` (generator settings of the embedded export, ``ensure_coco`` arguments; null for COCO).
    """

    def __init__(
        self,
        source: str,
        root: str,
        train_split: str,
        val_split: str,
        image_size: int,
        num_classes: int,
        train_transform: Callable,
        val_transform: Callable,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        pin_memory: bool | None,
        persistent_workers: bool,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        skip_corrupt: bool,
        filter_empty: bool,
        embedded: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"data.source={source!r}; valid: {', '.join(SOURCES)}")
        self.source = source
        self.root = Path(root).expanduser()
        self.train_split, self.val_split = train_split, val_split
        self.image_size, self.num_classes = image_size, num_classes
        self.train_transform, self.val_transform = train_transform, val_transform
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.skip_corrupt, self.filter_empty = skip_corrupt, filter_empty
        self.embedded = dict(embedded or {})
        if source == "embedded":  # root for the default settings, root-<hash> for others (never clobbered)
            self.root = embedded_root(ensure_coco, self.root, self.embedded)
        self.train_set: KeyedDetectionDataset | None = None
        self.val_set: KeyedDetectionDataset | None = None

    # ------------------------------------------------------------------ datasets
    def prepare_data(self) -> None:
        if self.source == "embedded":
            ensure_coco(self.root, **self.embedded)

    def _instances(self, split: str, filter_empty: bool) -> CocoInstances:
        instances = CocoInstances(self.root, split, filter_empty)
        if instances.num_classes != self.num_classes:
            raise ValueError(
                f"{instances.ann_file} has {instances.num_classes} categories but data.num_classes={self.num_classes}; "
                f"set data.num_classes={instances.num_classes}"
            )
        return instances

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.source == "embedded":
            ensure_coco(self.root, **self.embedded)
        self.train_set = KeyedDetectionDataset(self._instances(self.train_split, self.filter_empty), self.train_transform, self.seed, self.skip_corrupt)
        self.val_set = KeyedDetectionDataset(self._instances(self.val_split, False), self.val_transform, self.seed, self.skip_corrupt)

    @property
    def val_instances(self) -> CocoInstances:
        """The validation split: its annotation file, category ids and names (for evaluation)."""
        self.setup()
        return self.val_set.source

    # ------------------------------------------------------------------ loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def _loader(self, dataset: KeyedDetectionDataset, sampler: ResumableBatchSampler) -> DataLoader:
        return DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate_detection, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self._rank_world()
        sampler = ResumableBatchSampler(len(self.train_set), self.batch_size, self.shuffle, self.drop_last, self.seed, rank, world)
        if self._resume is not None:
            sampler.resume_at(*self._resume)
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader:
        """Every validation image once per rank-shard (padding duplicates are removed by the evaluator)."""
        self.setup()
        rank, world = self._rank_world()
        return self._loader(self.val_set, ResumableBatchSampler(len(self.val_set), self.val_batch_size, False, False, self.seed, rank, world))
