"""Frozen-feature caching: run the backbone once over a dataset, keep the features in memory.

``extract_bank`` runs ``FrozenFeatures`` over a ``KeyedDataset`` in the deterministic order of a
non-shuffled ``ResumableBatchSampler``; with several processes each extracts its shard and the shards
are all-gathered, so every process holds the whole bank. ``FeatureBankDataset`` serves batches of a
bank by the same ``SampleKey`` batches the image path uses (same order, same resume position).
Only exact when the transform is deterministic (``transforms.is_deterministic``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from selfsup.data.collate import BatchCollator
from selfsup.data.keyed import KeyedDataset
from selfsup.data.sampling import ResumableBatchSampler, SampleKey

log = logging.getLogger("selfsup")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class FeatureBank:
    """``features[k]``: ``[N, ...]`` per output key; ``labels``: ``[N]``; row ``i`` = dataset item ``i``."""

    features: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@torch.no_grad()
def extract_bank(
    extract: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    dataset: KeyedDataset,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    dtype: str = "float32",
    rank: int = 0,
    world_size: int = 1,
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FeatureBank:
    """Features of every item of ``dataset`` (all processes get all of them)."""
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype={dtype!r}; valid: {', '.join(DTYPES)}")
    start = time.perf_counter()
    sampler = ResumableBatchSampler(len(dataset), batch_size, False, False, 0, rank, world_size)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=BatchCollator(None, 0), num_workers=num_workers)
    parts: dict[str, list[torch.Tensor]] = {}
    labels = []
    for batch in loader:
        for key, value in extract(batch["images"].to(device)).items():
            parts.setdefault(key, []).append(value.to(DTYPES[dtype]))
        labels.append(batch["labels"].to(device))
    index = torch.tensor(sampler.rank_indices(0), device=device)
    local = {k: torch.cat(v) for k, v in parts.items()}
    local_labels = torch.cat(labels)
    if world_size > 1 and all_gather is not None:
        index = all_gather(index).reshape(-1)
        local = {k: all_gather(v).flatten(0, 1) for k, v in local.items()}
        local_labels = all_gather(local_labels).reshape(-1)
    n = len(dataset)
    features = {k: v.new_empty((n, *v.shape[1:])).index_copy_(0, index, v).cpu() for k, v in local.items()}
    bank = FeatureBank(features, local_labels.new_empty(n).index_copy_(0, index, local_labels).cpu())
    size = sum(v.numel() * v.element_size() for v in features.values()) / 2**20
    log.info("feature cache: %d items, %s, %.0f MB, %.1f s", n, {k: tuple(v.shape[1:]) for k, v in features.items()}, size, time.perf_counter() - start)
    return bank


class FeatureBankDataset:
    """Batched access to a ``FeatureBank`` by ``SampleKey`` lists (``__getitems__``: one gather per batch)."""

    def __init__(self, bank: FeatureBank) -> None:
        self.bank = bank

    def __len__(self) -> int:
        return len(self.bank)

    def __getitems__(self, keys: list[SampleKey]) -> dict[str, Any]:
        index = torch.tensor([k.index for k in keys])
        return {
            "features": {k: v[index] for k, v in self.bank.features.items()},
            "labels": self.bank.labels[index],
            "epoch": keys[0].epoch,
            "batch_index": keys[0].batch,
            "corrupt": 0,
        }


def keep_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """Collate function of ``FeatureBankDataset`` loaders: the batch is already assembled."""
    return batch
