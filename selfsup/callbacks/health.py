"""Representation health of a JEPA run, logged to every logger and shown in the progress bar.

Every ``every_n_steps`` optimiser steps, from what the step already computed (no extra forward):

- ``health/rankme``: effective rank of the mean-pooled target-encoder features of the last
  ``num_features`` images (a queue over recent steps, gathered over ranks);
- ``health/feature_std``: mean per-dimension std of those features after L2 normalisation
  (``1/sqrt(D)`` when spread over the sphere, 0 at collapse);
- ``health/token_rankme``, ``health/token_std``: the same over the patch tokens of this batch
  (dimensional collapse of the dense features; at most ``num_tokens`` tokens, evenly strided);
- ``health/pred_target_cosine``: cosine similarity of predictor outputs and their targets;
- ``health/loss_block{k}``: the loss of each target block;
- ``health/ema_momentum``: the EMA momentum used by this step;
- ``health/collapsed``: 1 when ``feature_std * sqrt(D) < collapse_std`` or ``rankme < collapse_rank``
  (also logged once as a warning in the console).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch

from selfsup.data.collate import micro_batches
from selfsup.eval.health import cosine, loss_per_block, normalized_std, rankme

log = logging.getLogger("selfsup")


def health_metrics(
    pooled: torch.Tensor,
    tokens: torch.Tensor,
    prediction: torch.Tensor,
    target: torch.Tensor,
    npred: int,
    loss_kind: str,
    collapse_std: float,
    collapse_rank: float,
) -> dict[str, float]:
    """Every ``health/*`` value except the momentum, from pooled features ``[n, D]``, patch tokens
    ``[..., D]`` and the predictions/targets of one step."""
    dim = pooled.shape[-1]
    metrics = {
        "health/rankme": rankme(pooled),
        "health/feature_std": normalized_std(pooled),
        "health/token_rankme": rankme(tokens.reshape(-1, tokens.shape[-1])),
        "health/token_std": normalized_std(tokens.reshape(-1, tokens.shape[-1])),
        "health/pred_target_cosine": cosine(prediction, target),
    }
    for k, value in enumerate(loss_per_block(prediction, target, npred, loss_kind)):
        metrics[f"health/loss_block{k}"] = value
    collapsed = metrics["health/feature_std"] * math.sqrt(dim) < collapse_std or metrics["health/rankme"] < collapse_rank
    metrics["health/collapsed"] = float(collapsed)
    return metrics


class RepresentationHealth(L.Callback):
    """Logs ``health/*`` (see the module docstring) during pretraining.

    Config keys (``configs/callbacks/pretrain.yaml`` ``health``): ``every_n_steps`` (after optimiser
    steps that are multiples of it; the config sets ``trainer.log_every_n_steps`` so every computed value
    is written exactly once, at the step it describes), ``num_features`` (pooled features kept for
    RankMe; RankMe is at most ``min(num_features, D)``), ``num_tokens`` (patch tokens used for the
    token metrics), ``collapse_std``, ``collapse_rank``, ``prog_bar`` (show rankme, feature_std and
    collapsed in the progress bar).
    """

    def __init__(
        self,
        every_n_steps: int = 10,
        num_features: int = 512,
        num_tokens: int = 4096,
        collapse_std: float = 0.1,
        collapse_rank: float = 2.0,
        prog_bar: bool = True,
    ) -> None:
        if every_n_steps < 1 or num_features < 2:
            raise ValueError(f"every_n_steps={every_n_steps} must be >= 1 and num_features={num_features} >= 2")
        self.every_n_steps = every_n_steps
        self.num_features = num_features
        self.num_tokens = num_tokens
        self.collapse_std = collapse_std
        self.collapse_rank = collapse_rank
        self.prog_bar = prog_bar
        self._queue: torch.Tensor | None = None
        self._warned = False

    def _remember(self, pooled: torch.Tensor) -> torch.Tensor:
        queue = pooled if self._queue is None else torch.cat([pooled, self._queue])
        self._queue = queue[: self.num_features]
        return self._queue

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        out = outputs.get("output") if isinstance(outputs, dict) else None
        if out is None or out.target_tokens is None:
            return
        tokens = out.target_tokens.detach()
        pooled = tokens.float().mean(dim=1)
        if trainer.world_size > 1:
            pooled = pl_module.all_gather(pooled).reshape(-1, pooled.shape[-1])
        queue = self._remember(pooled.cpu())
        step = trainer.global_step  # already counts this step's optimiser update
        if step % self.every_n_steps:
            return
        flat = tokens.reshape(-1, tokens.shape[-1])
        flat = flat[:: max(1, -(-flat.shape[0] // self.num_tokens))]
        metrics = health_metrics(
            queue, flat.cpu(), out.prediction.cpu(), out.target.cpu(), len(micro_batches(batch)[-1]["masks_pred"]),
            pl_module.objective.loss, self.collapse_std, self.collapse_rank,
        )
        metrics["health/ema_momentum"] = float(pl_module.schedule.momentum(step - 1))
        if metrics["health/collapsed"] and not self._warned:
            self._warned = True
            log.warning(
                "representation collapse at step %d: RankMe %.2f, normalised feature std %.4f (x sqrt(D) = %.3f); "
                "consider a lower learning rate or a higher EMA momentum", step, metrics["health/rankme"],
                metrics["health/feature_std"], metrics["health/feature_std"] * math.sqrt(queue.shape[-1]),
            )
        shown = ("health/rankme", "health/feature_std", "health/collapsed") if self.prog_bar else ()
        batch_size = tokens.shape[0]
        for key, value in metrics.items():
            pl_module.log(key, value, prog_bar=key in shown, batch_size=batch_size, rank_zero_only=True)
