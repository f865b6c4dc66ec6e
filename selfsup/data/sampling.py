"""Deterministic, distributed, resumable batch sampling.

Every sample is addressed by a ``SampleKey(index, epoch, batch, rank)``. The order of an epoch is
``torch.DistributedSampler``'s (``randperm`` seeded with ``seed + epoch``, padded to a multiple of
the world size, rank ``r`` takes every ``world``-th index), so a one-process run sees exactly the
order the official I-JEPA loader sees. The keys travel with the samples to the collator, which seeds
the mask sampler from them, and to the dataset, which seeds the augmentation of each sample from
``(seed, epoch, index)``: data order, augmentations and masks are the same for any number of
workers, and after a resume in the middle of an epoch (``resume_at``).

Gradient accumulation is data parallelism over time: with ``accumulate=K`` one process plays ``K``
*virtual ranks*. The epoch is sharded over ``world_size * K`` virtual ranks; process ``r`` owns
virtual ranks ``r*K ... r*K+K-1`` and each batch it yields holds one micro-batch of each, in that
order, every key carrying its virtual rank (which seeds the masks). So two processes with ``K=1``
and one process with ``K=2`` see the same micro-batches with the same masks, step for step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.data import Sampler


class SampleKey(NamedTuple):
    index: int  # index into the dataset
    epoch: int
    batch: int  # batch (optimiser step) number within the epoch
    rank: int  # virtual rank: process rank * accumulate + micro-batch index


class ResumableBatchSampler(Sampler[list[SampleKey]]):
    """Batches of ``SampleKey`` for one rank (``accumulate`` micro-batches of ``batch_size`` each);
    ``len()`` is always the full epoch, in optimiser steps."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        accumulate: int = 1,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("the dataset is empty")
        if batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {batch_size}")
        if accumulate <= 0:
            raise ValueError(f"data.accumulate_grad_batches must be positive, got {accumulate}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.accumulate = accumulate
        self.epoch = 0
        self._resume: tuple[int, int] | None = None
        per_rank = -(-num_samples // self.virtual_world_size)
        if drop_last and per_rank < batch_size:
            raise ValueError(
                f"data.batch_size={batch_size} is larger than the {per_rank} samples each of the "
                f"{world_size} process(es) x {accumulate} accumulated micro-batch(es) gets per epoch; "
                "lower data.batch_size or add data"
            )

    @property
    def virtual_world_size(self) -> int:
        return self.world_size * self.accumulate

    @property
    def virtual_ranks(self) -> range:
        return range(self.rank * self.accumulate, (self.rank + 1) * self.accumulate)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> ResumableBatchSampler:
        """Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` each epoch: that is us."""
        return self

    def resume_at(self, epoch: int, batch: int) -> None:
        """Start ``epoch`` at batch ``batch`` (the first batch not yet trained)."""
        self._resume = (epoch, batch)

    def rank_indices(self, epoch: int, virtual_rank: int | None = None) -> list[int]:
        """Dataset indices of ``virtual_rank`` (default: this process's first) for ``epoch``."""
        virtual_rank = self.virtual_ranks[0] if virtual_rank is None else virtual_rank
        world = self.virtual_world_size
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            indices = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            indices = list(range(self.num_samples))
        total = -(-self.num_samples // world) * world
        padding = total - len(indices)
        indices += (indices * (padding // len(indices) + 1))[:padding]
        return indices[virtual_rank:total:world]

    def __len__(self) -> int:
        per_rank = -(-self.num_samples // self.virtual_world_size)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self):
        epoch = self.epoch
        start = self._resume[1] if self._resume and self._resume[0] == epoch else 0
        shards = {v: self.rank_indices(epoch, v) for v in self.virtual_ranks}
        for b in range(start, len(self)):
            yield [
                SampleKey(i, epoch, b, v)
                for v, indices in shards.items()
                for i in indices[b * self.batch_size : (b + 1) * self.batch_size]
            ]
