"""Warmup then piecewise-constant learning rate (detectron2 ``WarmupParamScheduler`` over
``MultiStepParamScheduler``, as the ViTDet recipes use it), a pure function of the optimiser step.

Step ``s`` (0-based, the number of optimiser steps already taken) of a run of ``T`` steps gets
``base_lr * m(s)``: ``m`` is ``values[k]`` after the ``k``-th milestone (milestones are fractions of
``T``, so the recipe scales with the run length), and during the first ``warmup_steps`` it rises
linearly from ``warmup_factor * values[0]`` to the value it has at the end of the warmup.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class WarmupMultiStepSchedule:
    """Config keys (``configs/schedule/vitdet.yaml``): ``epochs``, ``base_lr``, ``warmup_steps``,
    ``warmup_factor``, ``milestones`` (fractions of the total number of steps), ``values`` (the LR
    multiplier before the first milestone, after the first, ...), ``steps_per_epoch`` (null: the
    training module sets it from the data loader)."""

    epochs: int
    base_lr: float
    warmup_steps: int
    warmup_factor: float
    milestones: Sequence[float]
    values: Sequence[float]
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if len(self.values) != len(self.milestones) + 1:
            raise ValueError(f"schedule.values needs one more entry than schedule.milestones: {list(self.values)} vs {list(self.milestones)}")
        if list(self.milestones) != sorted(self.milestones) or any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"schedule.milestones are increasing fractions of the run in (0, 1), got {list(self.milestones)}")

    @property
    def total_steps(self) -> int:
        if not self.steps_per_epoch:
            raise RuntimeError("schedule.steps_per_epoch is not set (the data loader length is unknown)")
        return self.epochs * self.steps_per_epoch

    def _main(self, step: int) -> float:
        milestone_steps = [round(m * self.total_steps) for m in self.milestones]
        return float(self.values[bisect.bisect_right(milestone_steps, step)])

    def multiplier(self, step: int) -> float:
        if step < self.warmup_steps:
            start, end = self.warmup_factor * float(self.values[0]), self._main(self.warmup_steps)
            return start + (end - start) * step / self.warmup_steps
        return self._main(step)

    def lr(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based)."""
        return self.base_lr * self.multiplier(step)
