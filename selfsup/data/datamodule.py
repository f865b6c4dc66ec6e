"""The image DataModule used by pretraining and probing.

Train batches come from a ``ResumableBatchSampler`` (deterministic, distributed by this module --
set ``trainer.use_distributed_sampler=false`` -- and resumable mid-epoch) through ``KeyedDataset``
and ``BatchCollator`` (which adds JEPA masks when a mask sampler is configured). The position of
training (epoch, next batch) is part of the checkpoint via ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from selfsup.data.collate import BatchCollator
from selfsup.data.embedded import ensure_imagefolder
from selfsup.data.embedded.cache import embedded_root
from selfsup.data.images import ImageFolderDataset, UnlabeledImageDataset
from selfsup.data.keyed import KeyedDataset
from selfsup.data.position import TrainingPosition
from selfsup.data.sampling import ResumableBatchSampler
from selfsup.masks.multiblock import MultiBlockMaskSampler

SOURCES = ("embedded", "imagefolder", "folder")


class ImageDataModule(TrainingPosition, L.LightningDataModule):
    """Images from the embedded dataset, an ImageFolder tree, or an unlabeled folder.

    Config keys (``configs/data/*.yaml``): ``source`` (embedded | imagefolder | folder), ``root``,
    ``train_split``, ``val_split`` (null: no validation), ``image_size``, ``train_transform``,
    ``val_transform``, ``mask_sampler`` (null for non-JEPA tasks), ``batch_size`` (per process),
    ``val_batch_size``, ``num_workers``, ``pin_memory`` (null: on when CUDA is available),
    ``persistent_workers``, ``shuffle``, ``drop_last``, ``seed``, ``skip_corrupt``, ``embedded``
    (generator settings: ``image_size``, ``train_per_class``, ``val_per_class``, ``num_classes``, ``seed``),
    ``accumulate_grad_batches`` (K micro-batches of ``batch_size`` per training batch, one per virtual
    rank, see ``ResumableBatchSampler``: the global batch is ``batch_size x world size x K``).

    With ``source=embedded`` the data lives in ``root`` for the default generator settings and in
    ``root-<hash>`` for others (``embedded_root``), so runs with other settings never clobber it.

    Subclasses for other layouts (``tasks.segmentation.datamodule``) override ``SOURCES``,
    ``embedded_writer``, ``_source`` and ``_collator``; sampling and resume stay here.
    """

    SOURCES: tuple[str, ...] = SOURCES
    embedded_writer: Callable[..., Path] = staticmethod(ensure_imagefolder)

    def __init__(
        self,
        source: str,
        root: str | None,
        train_split: str,
        val_split: str | None,
        image_size: int,
        train_transform: Callable,
        val_transform: Callable | None,
        mask_sampler: MultiBlockMaskSampler | None,
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
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__()
        if source not in self.SOURCES:
            raise ValueError(f"data.source={source!r}; valid: {', '.join(self.SOURCES)}")
        if root is None:
            raise ValueError(
                f"data.root is required for data.source={source}: pass data.root=/path/to/dataset "
                "(ImageFolder layout: <root>/train/<class>/<image>), or use data=embedded"
            )
        self.source = source
        self.root = Path(root).expanduser()
        self.train_split, self.val_split = train_split, val_split
        self.image_size = image_size
        self.train_transform, self.val_transform = train_transform, val_transform
        self.mask_sampler = mask_sampler
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed = seed
        self.skip_corrupt = skip_corrupt
        self.embedded = dict(embedded or {})
        if source == "embedded":
            self.root = embedded_root(self.embedded_writer, self.root, self.embedded)
        self.accumulate_grad_batches = accumulate_grad_batches
        self.train_set: KeyedDataset | None = None
        self.val_set: KeyedDataset | None = None
        self.classes: list[str] = []
        self._train_sampler: ResumableBatchSampler | None = None
        self._position: tuple[int, int] | None = None  # (epoch, next batch) of the training stream
        self._resume: tuple[int, int] | None = None

    # ------------------------------------------------------------------ datasets
    def _generate_embedded(self) -> None:
        self.embedded_writer(self.root, **self.embedded)

    def prepare_data(self) -> None:
        if self.source == "embedded":
            self._generate_embedded()

    def _source(self, split: str):
        if self.source == "folder":
            return UnlabeledImageDataset(self.root, split)
        return ImageFolderDataset(self.root, split)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.source == "embedded":
            self._generate_embedded()
        train = self._source(self.train_split)
        self.classes = list(train.classes)
        self.train_set = KeyedDataset(train, self.train_transform, self.seed, self.skip_corrupt)
        if self.val_split and self.val_transform is not None:
            val = self._source(self.val_split)
            self.val_set = KeyedDataset(val, self.val_transform, self.seed, self.skip_corrupt)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # ------------------------------------------------------------------ loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _collator(self, masks: bool) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return BatchCollator(self.mask_sampler if masks else None, self.seed)

    def _loader(self, dataset: KeyedDataset, sampler: ResumableBatchSampler, masks: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self._collator(masks),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self._rank_world()
        self._train_sampler = ResumableBatchSampler(
            len(self.train_set), self.batch_size, self.shuffle, self.drop_last, self.seed, rank, world,
            self.accumulate_grad_batches,
        )
        if self._resume is not None:
            self._train_sampler.resume_at(*self._resume)
        return self._loader(self.train_set, self._train_sampler, masks=True)

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        if self.val_set is None:
            return []
        rank, world = self._rank_world()
        sampler = ResumableBatchSampler(
            len(self.val_set), self.val_batch_size, False, False, self.seed, rank, world
        )
        return self._loader(self.val_set, sampler, masks=False)
