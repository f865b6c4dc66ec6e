"""Online probing during pretraining: how good are the features *now*, every epoch, for free.

At every training step, a linear probe and an EP probe (``probes``: any ``configs/probe`` partials)
are trained on the DETACHED target-encoder tokens of the labelled training batch
(``training_step`` returns ``{"output": JEPAOutput}`` with ``target_tokens [B, N, D]``), with their
own optimiser: no gradient reaches the encoder and the pretraining step is unchanged (the heads are
even initialised under a private RNG, so the pretraining draws are the same with or without them).
Every validation epoch they classify the validation images (``validation_step`` returns
``{"tokens", "labels"}``) and ``val/online_<name>_acc1`` is logged (so it is in the summary line).

The heads, their optimiser state and BatchNorm statistics are in the checkpoint (``state_dict``) and
restored exactly on resume. With several processes the head gradients are averaged, so every
process keeps identical heads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.collate import micro_batches
from selfsup.probes.head import ProbeHead
from selfsup.probing.features import FeatureSpec
from selfsup.probing.heads import build_pool
from selfsup.probing.metrics import topk_correct
from selfsup.training.optim import jepa_param_groups
from selfsup.utils.seeding import derive_seed

log = logging.getLogger("selfsup")


class OnlineProbe(L.Callback):
    """Config keys (``callbacks.online_probe`` of ``configs/callbacks/pretrain_online_probe.yaml``): ``probes``
    (name -> pooling partial), ``norm`` (batchnorm | none before each classifier), ``optimizer`` (partial
    taking parameter groups), ``num_classes`` (null: from the data), ``seed`` (of the heads' initialisation)."""

    def __init__(
        self,
        probes: dict[str, Callable[..., nn.Module]],
        optimizer: Callable[[list[dict]], torch.optim.Optimizer],
        norm: str = "batchnorm",
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        self.probes = dict(probes)
        self.optimizer_factory = optimizer
        self.norm = norm
        self.num_classes = num_classes
        self.seed = seed
        self.heads: nn.ModuleDict | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._counts: dict[str, torch.Tensor] = {}
        self._unlabelled = False

    # ------------------------------------------------------------------ setup / state
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.heads is not None:
            return
        encoder = pl_module.objective.target_encoder
        dm = trainer.datamodule
        grid = tuple(int(g) for g in encoder.patch_embed.dynamic_feat_size((dm.image_size, dm.image_size)))
        spec = FeatureSpec(encoder.embed_dim, grid, 0, 1, False)
        num_classes = self.num_classes or dm.num_classes
        if num_classes < 2:
            raise ValueError("the online probe needs labelled data (data.source=embedded or imagefolder), or drop callbacks.online_probe")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, 17))
            self.heads = nn.ModuleDict(
                {name: ProbeHead(build_pool(factory, spec), num_classes, self.norm) for name, factory in self.probes.items()}
            )
        self.optimizer = self.optimizer_factory(jepa_param_groups(dict(self.heads.items())))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.heads.to(pl_module.device)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    state[key] = value.to(pl_module.device)

    def state_dict(self) -> dict[str, Any]:
        return {"heads": self.heads.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.heads.load_state_dict(state_dict["heads"])
        self.optimizer.load_state_dict(state_dict["optimizer"])

    # ------------------------------------------------------------------ training
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        labels = micro_batches(batch)[-1]["labels"]  # outputs["output"] is the last micro-batch's
        if (labels < 0).any():
            if not self._unlabelled:
                log.warning("online probe: the training batches are unlabelled (label -1); it does not train")
            self._unlabelled = True
            return
        tokens = outputs["output"].target_tokens.detach().float()
        self.heads.train()
        with torch.enable_grad():
            losses = {name: F.cross_entropy(head(tokens), labels) for name, head in self.heads.items()}
            sum(losses.values()).backward()
        if trainer.world_size > 1:
            for p in self.heads.parameters():
                if p.grad is not None:
                    p.grad = trainer.strategy.reduce(p.grad, reduce_op="mean")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        pl_module.log_dict({f"train/online_{n}_loss": v.detach() for n, v in losses.items()}, batch_size=labels.shape[0])

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._counts = {}

    @torch.no_grad()
    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, dict) or "tokens" not in outputs:
            return
        tokens, labels = outputs["tokens"].float(), outputs["labels"]
        self.heads.eval()
        for name, head in self.heads.items():
            top1, top5 = topk_correct(head(tokens), labels)
            counts = torch.stack([top1.float(), top5.float(), torch.tensor(float(labels.shape[0]), device=tokens.device)])
            self._counts[name] = self._counts.get(name, 0) + counts

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._counts:
            return
        metrics = {}
        for name, counts in self._counts.items():
            c1, c5, n = trainer.strategy.reduce(counts, reduce_op="sum").tolist()
            metrics[f"val/online_{name}_acc1"] = 100.0 * c1 / n
            metrics[f"val/online_{name}_acc5"] = 100.0 * c5 / n
        pl_module.log_dict(metrics)
