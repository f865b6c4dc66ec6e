"""k-nearest-neighbour evaluation on L2-normalised frozen features (DINO / efficient-probing ``knn_classifier``).

Each validation image votes with its ``k`` most cosine-similar training images, weighted by
``exp(similarity / T)``; the class scores are summed and top-1/top-5 read off. ``KNNModule`` runs
it through the ordinary ``fit`` loop: one "training" epoch stores the training features (no
optimiser), the validation epoch extracts the validation features and classifies them for every k.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from selfsup.probing.features import FrozenFeatures

log = logging.getLogger("selfsup")
TOKENS = ("mean", "cls")


@torch.no_grad()
def knn_classify(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    k: int, temperature: float, num_classes: int, chunk: int = 256,
) -> tuple[float, float]:
    """``(top1, top5)`` in percent; features are L2-normalised here."""
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    k = min(k, train_x.shape[0])
    top1 = top5 = 0
    for start in range(0, test_x.shape[0], chunk):
        sim, idx = (test_x[start : start + chunk] @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=sim.dtype)
        votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
        pred = votes.topk(min(5, num_classes), dim=1).indices
        target = test_y[start : start + chunk, None]
        top1 += (pred[:, :1] == target).any(dim=1).sum().item()
        top5 += (pred == target).any(dim=1).sum().item()
    n = test_x.shape[0]
    return 100.0 * top1 / n, 100.0 * top5 / n


class KNNModule(L.LightningModule):
    """Config keys (``configs/model/knn.yaml``): ``features`` (``FrozenFeatures``, ``output: pooled``),
    ``token`` (mean | cls: which pooled feature), ``block`` (which of the features' blocks, -1: last),
    ``ks``, ``temperature``, ``num_classes`` (null: from the data)."""

    def __init__(self, features: FrozenFeatures, token: str, block: int, ks: list[int], temperature: float, num_classes: int | None = None) -> None:
        super().__init__()
        if token not in TOKENS:
            raise ValueError(f"model.token={token!r}; valid: {', '.join(TOKENS)}")
        if features.output != "pooled":
            raise ValueError("kNN reads pooled features: set model.features.output=pooled")
        self.automatic_optimization = False
        self.features = features
        self.token, self.block = token, block
        self.ks, self.temperature = list(ks), temperature
        self.num_classes = num_classes
        self._bank: dict[str, list[torch.Tensor]] = {}

    def configure_optimizers(self) -> None:
        return None

    def _collect(self, split: str, batch: dict[str, Any]) -> None:
        pooled = self.features(batch["images"])
        if self.token not in pooled:
            raise ValueError(f"model.token={self.token}: the backbone has no class token (use token=mean)")
        self._bank.setdefault(f"{split}_x", []).append(pooled[self.token][:, self.block].float())
        self._bank.setdefault(f"{split}_y", []).append(batch["labels"])

    def on_train_epoch_start(self) -> None:
        self._bank = {}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect("train", batch)

    def on_validation_epoch_start(self) -> None:
        self._bank = {k: v for k, v in self._bank.items() if k.startswith("train")}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._collect("val", batch)

    def _gathered(self, key: str) -> torch.Tensor:
        local = torch.cat(self._bank[key])
        return self.all_gather(local).flatten(0, 1) if self.trainer.world_size > 1 else local

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or "train_x" not in self._bank:
            return
        train_x, train_y, val_x, val_y = (self._gathered(k) for k in ("train_x", "train_y", "val_x", "val_y"))
        num_classes = self.num_classes or self.trainer.datamodule.num_classes
        metrics = {}
        for k in self.ks:
            top1, top5 = knn_classify(train_x, train_y, val_x, val_y, k, self.temperature, num_classes)
            metrics[f"val/knn_k{k}_acc1"], metrics[f"val/knn_k{k}_acc5"] = top1, top5
        log.info("kNN (T=%g) on %d train / %d val features: %s", self.temperature, len(train_y), len(val_y),
                 ", ".join(f"k={k}: {metrics[f'val/knn_k{k}_acc1']:.2f}" for k in self.ks))
        self.log_dict(metrics)
