"""Collating ``KeyedDataset`` samples into a batch dict, with JEPA masks when a sampler is given."""

from __future__ import annotations

from itertools import groupby
from typing import Any

import torch

from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.utils.seeding import seeded_generator


def micro_batches(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The micro-batches of a training batch: ``batch["micro_batches"]`` under gradient accumulation,
    else ``[batch]``."""
    return batch["micro_batches"] if "micro_batches" in batch else [batch]


class BatchCollator:
    """``list[sample] -> {"images", "labels", "epoch", "batch_index", "rank", "corrupt"[, "masks_enc", "masks_pred"]}``.

    The masks are in the official format (``nenc`` x ``[B, Nc]``, ``npred`` x ``[B, Nt]`` LongTensors)
    and drawn from a generator seeded by ``(seed, epoch, rank, batch index)`` of the batch's keys.

    Samples of several virtual ranks (gradient accumulation, see ``ResumableBatchSampler``) become
    ``{"micro_batches": [one such dict per virtual rank], "epoch", "batch_index", "corrupt"}``: each
    micro-batch has its own masks, exactly those the process of that rank would draw.
    """

    def __init__(self, mask_sampler: MultiBlockMaskSampler | None, seed: int) -> None:
        self.mask_sampler = mask_sampler
        self.seed = seed

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        groups = [list(group) for _, group in groupby(samples, key=lambda s: s["key"].rank)]
        if len(groups) == 1:
            return self._collate(samples)
        parts = [self._collate(group) for group in groups]
        return {
            "micro_batches": parts,
            "epoch": parts[0]["epoch"],
            "batch_index": parts[0]["batch_index"],
            "corrupt": sum(p["corrupt"] for p in parts),
        }

    def _collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        key = samples[0]["key"]
        batch: dict[str, Any] = {
            "images": torch.stack([s["image"] for s in samples]),
            "labels": torch.tensor([s["label"] for s in samples], dtype=torch.long),
            "epoch": key.epoch,
            "batch_index": key.batch,
            "rank": key.rank,
            "corrupt": sum(s["corrupt"] for s in samples),
        }
        if self.mask_sampler is not None:
            generator = seeded_generator(self.seed, key.epoch, key.rank, key.batch)
            batch["masks_enc"], batch["masks_pred"] = self.mask_sampler(len(samples), generator)
        return batch
