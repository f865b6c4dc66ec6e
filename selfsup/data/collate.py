"""Collating ``KeyedDataset`` samples into a batch dict, with JEPA masks when a sampler is given."""

from __future__ import annotations

from typing import Any

import torch

from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.utils.seeding import seeded_generator


class BatchCollator:
    """``list[sample] -> {"images", "labels", "epoch", "batch_index", "corrupt"[, "masks_enc", "masks_pred"]}``.

    The masks are in the official format (``nenc`` x ``[B, Nc]``, ``npred`` x ``[B, Nt]`` LongTensors)
    and drawn from a generator seeded by ``(seed, epoch, rank, batch index)`` of the batch's keys.
    """

    def __init__(self, mask_sampler: MultiBlockMaskSampler | None, seed: int) -> None:
        self.mask_sampler = mask_sampler
        self.seed = seed

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        key = samples[0]["key"]
        batch: dict[str, Any] = {
            "images": torch.stack([s["image"] for s in samples]),
            "labels": torch.tensor([s["label"] for s in samples], dtype=torch.long),
            "epoch": key.epoch,
            "batch_index": key.batch,
            "corrupt": sum(s["corrupt"] for s in samples),
        }
        if self.mask_sampler is not None:
            generator = seeded_generator(self.seed, key.epoch, key.rank, key.batch)
            batch["masks_enc"], batch["masks_pred"] = self.mask_sampler(len(samples), generator)
        return batch
