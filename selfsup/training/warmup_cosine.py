"""Per-iteration warmup + half-cosine schedules of probing protocols, as pure functions of the step.

``lr(step)``: the fractional epoch is ``(step + offset) / steps_per_epoch``; a linear warmup from
``warmup_start_lr`` to the peak over ``warmup_epochs``, then a half cosine to ``min_lr`` at
``epochs``. The peak is ``base_lr * batch_size / 256`` when ``batch_scaled`` (the MAE / efficient-
probing ``blr`` rule, ``batch_size`` = the effective batch over all processes, set by the training
module), else ``base_lr``. ``offset=0`` is MAE's ``lr_sched.adjust_learning_rate`` (the first
iteration of a warmup gets lr 0; DINOv2's ``CosineAnnealingLR`` likewise starts at the peak);
``offset=1`` is the JEPA ``WarmupCosineSchedule`` (stepped before the iteration, first call at 1).
``wd(step)``: a cosine from ``weight_decay`` to ``final_weight_decay`` over training (V-JEPA's
``CosineWDSchedule``); constant when they are equal.

``apply(optimizer, step)`` writes ``lr * group["lr_scale"]`` (default 1) into every group and the
weight decay into every group not marked ``WD_exclude``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class WarmupCosineSchedule:
    """Config keys (``configs/schedule/warmup_cosine.yaml``): ``epochs``, ``warmup_epochs``, ``base_lr``,
    ``batch_scaled``, ``warmup_start_lr``, ``min_lr``, ``weight_decay``, ``final_weight_decay``, ``offset``,
    ``steps_per_epoch`` (null: the data loader length), ``batch_size`` (null: the effective batch)."""

    epochs: float
    warmup_epochs: float
    base_lr: float
    batch_scaled: bool = True
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0
    weight_decay: float = 0.0
    final_weight_decay: float = 0.0
    offset: int = 0
    steps_per_epoch: int | None = None
    batch_size: int | None = None

    @property
    def peak_lr(self) -> float:
        if not self.batch_scaled:
            return self.base_lr
        if not self.batch_size:
            raise RuntimeError("schedule.batch_size is not set (the effective batch size is unknown)")
        return self.base_lr * self.batch_size / 256

    def _epoch(self, step: int) -> float:
        if not self.steps_per_epoch:
            raise RuntimeError("schedule.steps_per_epoch is not set (the data loader length is unknown)")
        return (step + self.offset) / self.steps_per_epoch

    def lr(self, step: int) -> float:
        epoch, peak = self._epoch(step), self.peak_lr
        if epoch < self.warmup_epochs:
            return self.warmup_start_lr + (peak - self.warmup_start_lr) * epoch / self.warmup_epochs
        progress = min(1.0, (epoch - self.warmup_epochs) / max(1e-12, self.epochs - self.warmup_epochs))
        return self.min_lr + (peak - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def wd(self, step: int) -> float:
        progress = min(1.0, self._epoch(step) / self.epochs)
        return self.final_weight_decay + (self.weight_decay - self.final_weight_decay) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> tuple[float, float]:
        lr, wd = self.lr(step), self.wd(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if not group.get("WD_exclude", False):
                group["weight_decay"] = wd
        return lr, wd
