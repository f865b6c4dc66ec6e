"""Per-step learning-rate, weight-decay and EMA-momentum schedules, as the official I-JEPA code.

Everything is a pure function of the optimiser step, so a resumed run continues exactly (the
official code instead fast-forwards stateful schedulers by calling them ``start_epoch * ipe`` times).

Official step semantics: the LR and WD schedulers are stepped *before* the forward pass, and their
first call sees ``step = 1``; the momentum generator is consumed *after* the optimiser step, and its
first value (``k = 0``) is ``ema[0]``. Here ``lr(s)``/``wd(s)`` take that 1-based ``s`` and
``momentum(k)`` the 0-based update index, so optimiser step ``k`` uses ``lr(k+1)``, ``wd(k+1)``,
``momentum(k)``.

Global-batch-aware learning rate: ``start_lr``, ``ref_lr`` and ``final_lr`` are the values for
``reference_batch_size`` images per optimiser step (2048 in the official I-JEPA configs). At another
global batch ``G`` the whole LR curve is multiplied by ``lr_scale_factor(lr_scaling, G, reference)``:
``G / reference`` (``linear``, Goyal et al. 2017), ``sqrt(G / reference)`` (``sqrt``, the rule for
adaptive optimisers), or 1 (``none``). The I-JEPA authors warn that "linear learning rate scaling
rules don't hold very well" for self-supervised ViTs (facebookresearch/ijepa#41): keep the reference
batch when you can, and treat the scaled value as a starting point to tune. Weight decay and the EMA
range are not scaled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LR_SCALING = ("none", "linear", "sqrt")


def lr_scale_factor(rule: str, global_batch_size: int, reference_batch_size: int | None) -> float:
    """How much the recipe's learning rates are multiplied by at ``global_batch_size`` (see module doc)."""
    if rule not in LR_SCALING:
        raise ValueError(f"schedule.lr_scaling={rule!r}; valid: {', '.join(LR_SCALING)}")
    if rule == "none" or not reference_batch_size:
        return 1.0
    ratio = global_batch_size / reference_batch_size
    return ratio if rule == "linear" else math.sqrt(ratio)


@dataclass
class JEPASchedule:
    """Warmup-cosine LR, cosine-increasing WD, linear EMA momentum.

    Config keys (``configs/schedule/*.yaml``): ``epochs``, ``warmup_epochs``, ``start_lr``,
    ``ref_lr``, ``final_lr``, ``weight_decay``, ``final_weight_decay``, ``ema`` ([start, end]),
    ``ipe_scale``, ``steps_per_epoch`` (null: the training module sets it from the data loader,
    like the official ``ipe = len(loader)``), ``reference_batch_size`` (the global batch the learning
    rates are stated for; null: never scale), ``lr_scaling`` (none | linear | sqrt),
    ``global_batch_size`` (null: the training module sets it to batch size x processes x accumulation).
    """

    epochs: int
    warmup_epochs: float
    start_lr: float
    ref_lr: float
    final_lr: float
    weight_decay: float
    final_weight_decay: float
    ema: Sequence[float]
    ipe_scale: float = 1.0
    steps_per_epoch: int | None = None
    reference_batch_size: int | None = None
    lr_scaling: str = "linear"
    global_batch_size: int | None = None

    def __post_init__(self) -> None:
        lr_scale_factor(self.lr_scaling, 1, None)  # validates the rule name early

    @property
    def lr_factor(self) -> float:
        """The factor applied to every learning rate at ``global_batch_size`` (1 until it is known)."""
        if not self.global_batch_size:
            return 1.0
        return lr_scale_factor(self.lr_scaling, self.global_batch_size, self.reference_batch_size)

    def _ipe(self) -> int:
        if not self.steps_per_epoch:
            raise RuntimeError("schedule.steps_per_epoch is not set (the data loader length is unknown)")
        return self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup_epochs * self._ipe())

    @property
    def total_steps(self) -> int:
        return int(self.ipe_scale * self.epochs * self._ipe())

    def lr(self, step: int) -> float:
        """``WarmupCosineSchedule`` at 1-based step ``step``, times ``lr_factor``."""
        return self.lr_factor * self.recipe_lr(step)

    def recipe_lr(self, step: int) -> float:
        """``WarmupCosineSchedule`` at 1-based step ``step`` at the reference batch (unscaled)."""
        warmup = self.warmup_steps
        if step < warmup:
            progress = step / max(1, warmup)
            return self.start_lr + progress * (self.ref_lr - self.start_lr)
        progress = (step - warmup) / max(1, self.total_steps - warmup)
        cosine = self.final_lr + (self.ref_lr - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(self.final_lr, cosine)

    def wd(self, step: int) -> float:
        """``CosineWDSchedule`` at 1-based step ``step`` (an *increasing* cosine in every config)."""
        progress = step / self.total_steps
        wd = self.final_weight_decay + (self.weight_decay - self.final_weight_decay) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )
        if self.final_weight_decay <= self.weight_decay:
            return max(self.final_weight_decay, wd)
        return min(self.final_weight_decay, wd)

    def momentum(self, update: int) -> float:
        """EMA momentum of the 0-based ``update``: linear from ``ema[0]`` to ``ema[1]``, capped there."""
        start, end = float(self.ema[0]), float(self.ema[1])
        m = start + update * (end - start) / (self._ipe() * self.epochs * self.ipe_scale)
        return min(m, end) if end >= start else max(m, end)
