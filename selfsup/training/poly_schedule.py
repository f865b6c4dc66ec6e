"""Linear warmup then polynomial decay, per iteration: the ADE20K fine-tuning schedule.

Two flavours of the same recipe ("warmup 1500 iterations, then poly with power 1 to 0"), as the
reference code bases compute it, selected by ``style``:

- ``mmcv`` (BEiT / iBOT, mmcv 0.x ``PolyLrUpdaterHook`` with linear warmup): the poly curve runs over
  all ``total_steps``; during warmup the lr is that curve times ``1 - (1 - t/W)(1 - warmup_ratio)``.
- ``mmengine`` (mmseg 1.x MAE config: ``LinearLR`` then ``PolyLR``): the factor rises linearly from
  ``warmup_ratio`` to 1 over ``W`` steps, then poly decays from the base lr over ``total_steps - W``.

``t`` is the number of optimiser steps already taken (the iteration about to run, 0-based), as the
runners do, so the schedule is a pure function of the global step (exact on resume).
"""

from __future__ import annotations

from dataclasses import dataclass

STYLES = ("mmcv", "mmengine")


@dataclass
class PolySchedule:
    """Config keys (``model.schedule`` of ``configs/model/seg_*.yaml``): ``lr`` (base), ``warmup_steps``,
    ``warmup_ratio``, ``power``, ``min_lr``, ``style`` (mmcv | mmengine), ``total_steps`` (null: the
    training module sets it from the trainer: ``max_steps``, or ``max_epochs`` x batches per epoch)."""

    lr: float
    warmup_steps: int
    warmup_ratio: float
    power: float
    min_lr: float
    style: str
    total_steps: int | None = None

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"schedule.style={self.style!r}; valid: {', '.join(STYLES)}")

    def _total(self) -> int:
        if not self.total_steps:
            raise RuntimeError("schedule.total_steps is not set (and the trainer did not set it)")
        return self.total_steps

    def _poly(self, progress: float, base: float) -> float:
        return (base - self.min_lr) * max(0.0, 1.0 - progress) ** self.power + self.min_lr

    def learning_rate(self, step: int, lr_scale: float = 1.0) -> float:
        """The lr of a parameter group whose base lr is ``lr * lr_scale`` (layer decay), at ``step``."""
        base, total, warmup = self.lr * lr_scale, self._total(), self.warmup_steps
        if self.style == "mmcv":
            regular = self._poly(step / total, base)
            if step >= warmup:
                return regular
            return regular * (1.0 - (1.0 - step / warmup) * (1.0 - self.warmup_ratio))
        if step < warmup:
            return base * (self.warmup_ratio + (1.0 - self.warmup_ratio) * step / warmup)
        return self._poly((step - warmup) / max(1, total - warmup), base)
