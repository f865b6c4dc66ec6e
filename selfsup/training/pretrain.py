"""The pretraining LightningModule: owns optimisation, schedules, EMA and logging.

One step, in the official order (spec a.5)::

    lr, wd = schedule(step + 1)              # set on every param group before the forward
    for each micro-batch k of K:             # K = data.accumulate_grad_batches (1: the official step)
        loss_k = objective(images_k, masks_k)    # under bf16 autocast when trainer.precision says so
        stop with a message if loss_k is not finite (weights untouched, last checkpoint kept)
        backward(loss_k / K)                 # gradients synchronised across processes on the last only
    optimizer.step; zero_grad
    target <- m(step) * target + (1 - m(step)) * online      # EMA, after the step, torch._foreach

Everything is derived from ``global_step`` (the number of optimiser steps taken), never from
counting calls, so a resumed run continues exactly. One training batch is one optimiser step, so
Lightning's step counters, logging and checkpoints never fall inside an accumulation.

The learning rates follow the global batch (``JEPASchedule.lr_factor``); the first train start
prints the scaled values when the global batch differs from the recipe's reference. With
``trainer=fsdp`` the objective is sharded in ``configure_model`` (``selfsup.training.fsdp``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import lightning as L
import torch
from torch import nn

from selfsup.data.collate import micro_batches
from selfsup.models.ema import ema_update_
from selfsup.training.fsdp import gradient_sync_disabled, reshard
from selfsup.training.optim import apply_lr_wd, jepa_param_groups
from selfsup.training.schedules import JEPASchedule

log = logging.getLogger("selfsup")


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
        self._checkpoint_global_batch: int | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if self.compile and not getattr(self, "_compiled", False):
            self.objective.compile_forwards()
            self._compiled = True

    def configure_model(self) -> None:
        """Shard the objective when the strategy shards (``trainer=fsdp``); nothing otherwise."""
        shard = getattr(self.trainer.strategy, "shard_objective", None)
        if shard is not None and not getattr(self, "_sharded", False):
            shard(self.objective)
            self._sharded = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(jepa_param_groups(self.objective.optimized_modules()))

    def on_train_start(self) -> None:
        if not self.schedule.steps_per_epoch:
            self.schedule.steps_per_epoch = int(self.trainer.num_training_batches)
        if not self.schedule.global_batch_size:
            self.schedule.global_batch_size = self._global_batch_size()
            self._report_global_batch()

    def _batch_layout(self) -> tuple[int, int]:
        """``(images per micro-batch, micro-batches per step)`` of this process's training loader."""
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        per_micro = getattr(loader, "batch_size", None) or getattr(sampler, "batch_size", None)
        if per_micro is None:
            raise RuntimeError("cannot tell the batch size of the training data loader; set schedule.global_batch_size")
        return int(per_micro), int(getattr(sampler, "accumulate", 1))

    def _global_batch_size(self) -> int:
        """Images per optimiser step over all processes: batch size x accumulation x world size."""
        per_micro, accumulate = self._batch_layout()
        return per_micro * accumulate * self.trainer.world_size

    def _report_global_batch(self) -> None:
        s, world = self.schedule, self.trainer.world_size
        if self._checkpoint_global_batch and self._checkpoint_global_batch != s.global_batch_size:
            log.warning(
                "resuming with a global batch of %d; the checkpoint was trained with %d: the data order "
                "and the learning rates change from here on", s.global_batch_size, self._checkpoint_global_batch,
            )
        if not self.trainer.is_global_zero or not s.reference_batch_size or s.global_batch_size == s.reference_batch_size:
            return
        factor = s.lr_factor
        per_micro, accumulate = self._batch_layout()
        log.warning(
            "global batch %d (%d images x %d micro-batch(es) x %d process(es)) differs from the recipe's "
            "schedule.reference_batch_size=%d: schedule.lr_scaling=%s scales the learning rates by %.4g -> "
            "start_lr %.4g, ref_lr %.4g, final_lr %.4g. The I-JEPA authors warn that linear scaling does not "
            "hold well for self-supervised ViTs (facebookresearch/ijepa#41); schedule.lr_scaling=none keeps "
            "the recipe's values.",
            s.global_batch_size, per_micro, accumulate, world, s.reference_batch_size,
            s.lr_scaling, factor, factor * s.start_lr, factor * s.ref_lr, factor * s.final_lr,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["global_batch_size"] = self.schedule.global_batch_size

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._checkpoint_global_batch = checkpoint.get("global_batch_size")

    # ------------------------------------------------------------------ step
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """One optimiser step over the batch's micro-batches; returns the mean loss and the last
        micro-batch's ``JEPAOutput``."""
        optimizer = self.optimizers()
        step = self.global_step
        lr, wd = self.schedule.lr(step + 1), self.schedule.wd(step + 1)
        apply_lr_wd(optimizer.optimizer, lr, wd)

        parts = micro_batches(batch)
        outputs = []
        for k, part in enumerate(parts):
            out = self.objective(part["images"], part["masks_enc"], part["masks_pred"])
            if not torch.isfinite(out.loss):
                raise NonFiniteLossError(
                    f"the loss became {out.loss.item()} at step {step} (epoch {self.current_epoch}); training "
                    "stopped before the weights were updated, so the last checkpoint is the last good state. "
                    "Lower schedule.ref_lr, check the data, or resume from that checkpoint."
                )
            with ExitStack() as no_sync:
                if k < len(parts) - 1:  # accumulate locally; the last backward synchronises the sum
                    no_sync.enter_context(gradient_sync_disabled(self.trainer.strategy, self.objective))
                self.manual_backward(out.loss if len(parts) == 1 else out.loss / len(parts))
            outputs.append(out)
        if self.clip_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.clip_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        momentum = self.schedule.momentum(step)
        for target, online in self.objective.ema_pairs():
            reshard(target)  # FSDP: the target's forward had no backward to free its gathered weights
            ema_update_(target, online, momentum)

        loss = outputs[0].loss.detach() if len(outputs) == 1 else torch.stack([o.loss.detach() for o in outputs]).mean()
        self._log_step(batch, parts, outputs, loss, lr, wd, momentum)
        return {"loss": loss, "output": outputs[-1]}

    def _log_step(
        self, batch: dict[str, Any], parts: list[dict[str, Any]], outputs: list[Any], loss: torch.Tensor,
        lr: float, wd: float, momentum: float,
    ) -> None:
        images = sum(p["images"].shape[0] for p in parts)
        now = time.perf_counter()
        metrics = {
            "train/loss": loss,
            "train/lr": lr,
            "train/wd": wd,
            "train/momentum": momentum,
            "train/mask_context": sum(float(p["masks_enc"][0].shape[1]) for p in parts) / len(parts),
            "train/mask_target": sum(float(p["masks_pred"][0].shape[1]) for p in parts) / len(parts),
        }
        if self._last_step_time is not None:
            metrics["train/images_per_sec"] = images * self.trainer.world_size / (now - self._last_step_time)
        self._last_step_time = now
        if batch.get("corrupt"):
            metrics["data/skipped_corrupt"] = float(batch["corrupt"])
        for key in outputs[0].logs:
            values = [o.logs[key] for o in outputs]
            metrics[f"train/{key}"] = values[0] if len(values) == 1 else sum(values) / len(values)
        self.log("train/loss", metrics.pop("train/loss"), prog_bar=True, batch_size=images)
        self.log_dict(metrics, batch_size=images)

    def on_train_epoch_start(self) -> None:
        self._last_step_time = None

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Target-encoder tokens of labelled validation images, for evaluation callbacks."""
        tokens = self.objective.target_encoder.forward_tokens(batch["images"])
        return {"tokens": tokens, "labels": batch["labels"]}

    def on_validation_epoch_end(self) -> None:
        reshard(self.objective.target_encoder)  # FSDP: back to shards before checkpoints and EMA
