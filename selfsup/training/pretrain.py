"""The pretraining LightningModule: owns optimisation, schedules, EMA and logging.

One step, in the official order (spec a.5)::

    lr, wd = schedule(step + 1)              # set on every param group before the forward
    loss = objective(images, masks)          # under bf16 autocast when trainer.precision says so
    stop with a message if loss is not finite (weights untouched, last checkpoint kept)
    backward; optimizer.step; zero_grad
    target <- m(step) * target + (1 - m(step)) * online      # EMA, after the step, torch._foreach

Everything is derived from ``global_step`` (the number of optimiser steps taken), never from
counting calls, so a resumed run continues exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from selfsup.models.ema import ema_update_
from selfsup.training.optim import apply_lr_wd, jepa_param_groups
from selfsup.training.schedules import JEPASchedule


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; training stops before the weights are touched."""


class PretrainModule(L.LightningModule):
    """Trains a JEPA objective (``IJEPA``, ``DMTJEPA``, ...).

    Config keys (``configs/model/pretrain.yaml``): ``objective``, ``optimizer`` (a partial taking the
    parameter groups), ``schedule`` (``JEPASchedule``), ``compile`` (``torch.compile`` the encoder,
    target encoder and predictor forwards), ``clip_grad_norm`` (null = none, as the official code).
    """

    def __init__(
        self,
        objective: nn.Module,
        optimizer: Callable[[list[dict]], torch.optim.Optimizer],
        schedule: JEPASchedule,
        compile: bool = False,
        clip_grad_norm: float | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.objective = objective
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.compile = compile
        self.clip_grad_norm = clip_grad_norm
        self._last_step_time: float | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if self.compile and not getattr(self, "_compiled", False):
            self.objective.compile_forwards()
            self._compiled = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(jepa_param_groups(self.objective.optimized_modules()))

    def on_train_start(self) -> None:
        if not self.schedule.steps_per_epoch:
            self.schedule.steps_per_epoch = int(self.trainer.num_training_batches)

    # ------------------------------------------------------------------ step
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        optimizer = self.optimizers()
        step = self.global_step
        lr, wd = self.schedule.lr(step + 1), self.schedule.wd(step + 1)
        apply_lr_wd(optimizer.optimizer, lr, wd)

        images, masks_enc, masks_pred = batch["images"], batch["masks_enc"], batch["masks_pred"]
        out = self.objective(images, masks_enc, masks_pred)
        if not torch.isfinite(out.loss):
            raise NonFiniteLossError(
                f"the loss became {out.loss.item()} at step {step} (epoch {self.current_epoch}); training "
                "stopped before the weights were updated, so the last checkpoint is the last good state. "
                "Lower schedule.ref_lr, check the data, or resume from that checkpoint."
            )
        self.manual_backward(out.loss)
        if self.clip_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.clip_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        momentum = self.schedule.momentum(step)
        for target, online in self.objective.ema_pairs():
            ema_update_(target, online, momentum)

        self._log_step(batch, out, lr, wd, momentum)
        return {"loss": out.loss.detach(), "output": out}

    def _log_step(self, batch: dict[str, Any], out: Any, lr: float, wd: float, momentum: float) -> None:
        images = batch["images"]
        now = time.perf_counter()
        metrics = {
            "train/loss": out.loss.detach(),
            "train/lr": lr,
            "train/wd": wd,
            "train/momentum": momentum,
            "train/mask_context": float(batch["masks_enc"][0].shape[1]),
            "train/mask_target": float(batch["masks_pred"][0].shape[1]),
        }
        if self._last_step_time is not None:
            metrics["train/images_per_sec"] = images.shape[0] * self.trainer.world_size / (now - self._last_step_time)
        self._last_step_time = now
        if batch.get("corrupt"):
            metrics["data/skipped_corrupt"] = float(batch["corrupt"])
        metrics.update({f"train/{k}": v for k, v in out.logs.items()})
        self.log("train/loss", metrics.pop("train/loss"), prog_bar=True, batch_size=images.shape[0])
        self.log_dict(metrics, batch_size=images.shape[0])

    def on_train_epoch_start(self) -> None:
        self._last_step_time = None

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Target-encoder tokens of labelled validation images, for evaluation callbacks."""
        tokens = self.objective.target_encoder.forward_tokens(batch["images"])
        return {"tokens": tokens, "labels": batch["labels"]}
