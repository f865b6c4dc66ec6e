"""The probe LightningModule: frozen features -> a head set, trained with a probing protocol.

One step (manual optimisation, like the pretraining module)::

    lr, wd = schedule(global_step)                     # per iteration, written into every group
    features = batch["features"] (cached) or FrozenFeatures(images)   # no grad, backbone in eval
    loss = sum of the heads' cross-entropies           # one head, or a whole linear grid
    backward; clip (optional); optimizer.step; zero_grad

Validation counts top-1/top-5 per head; ``val/acc1``/``val/acc5`` are the reported head's (the probe,
or the grid's best head) at this epoch, ``val/best_acc1``/``val/best_acc5``/``val/best_epoch`` the
best epoch so far (the efficient-probing protocol reports the best epoch on val). Every head's
numbers go to the loggers and to ``<run_dir>/probe_results.json``.

The frozen backbone is not stored in probe checkpoints (it comes from ``backbone.checkpoint``); a
fingerprint of its weights is, and a resume with different backbone weights is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.probing.cache import extract_bank
from selfsup.probing.features import FrozenFeatures
from selfsup.probing.metrics import BestTracker, topk_correct
from selfsup.probing.transforms import is_deterministic
from selfsup.training.checkpoint import CheckpointError
from selfsup.training.files import atomic_write
from selfsup.training.warmup_cosine import WarmupCosineSchedule

log = logging.getLogger("selfsup")
CACHE_MODES = ("auto", True, False)


def weights_fingerprint(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class ProbeModule(L.LightningModule):
    """Config keys (``configs/model/probe.yaml``): ``features`` (``FrozenFeatures``), ``heads`` (a head-set
    partial: ``SingleProbe`` or ``LinearGrid``), ``optimizer`` (partial taking the parameter groups),
    ``schedule`` (``WarmupCosineSchedule``), ``clip_grad_norm`` (null: none), ``cache_features`` (auto:
    cache when the training transform is deterministic | true | false), ``cache_dtype``, ``num_classes``
    (null: from the data)."""

    def __init__(
        self,
        features: FrozenFeatures,
        heads: Callable[..., nn.Module],
        optimizer: Callable[[list[dict]], torch.optim.Optimizer],
        schedule: WarmupCosineSchedule,
        clip_grad_norm: float | None = None,
        cache_features: str | bool = "auto",
        cache_dtype: str = "float32",
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if cache_features not in CACHE_MODES:
            raise ValueError(f"model.cache_features={cache_features!r}; valid: auto, true, false")
        self.automatic_optimization = False
        self.features = features
        self.heads_factory = heads
        self.heads: nn.Module | None = None
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.clip_grad_norm = clip_grad_norm
        self.cache_features = cache_features
        self.cache_dtype = cache_dtype
        self.num_classes = num_classes
        self.tracker = BestTracker()
        self._counts: dict[str, torch.Tensor] = {}
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if self.heads is not None:
            return
        dm = self.trainer.datamodule
        spec = self.features.spec(dm.image_size)
        num_classes = self.num_classes or dm.num_classes
        self.heads = self.heads_factory(spec=spec, num_classes=num_classes)
        if self.heads.requires != self.features.output:
            raise ValueError(
                f"{type(self.heads).__name__} reads features.output={self.heads.requires}, the features give "
                f"{self.features.output}: set model.features.output={self.heads.requires}"
            )
        trainable = sum(p.numel() for p in self.heads.parameters() if p.requires_grad)
        log.info("probe: %s on %s features %s, %d classes, %s trainable parameters", type(self.heads).__name__,
                 self.features.output, spec, num_classes, f"{trainable:,}")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.heads.param_groups())

    def _use_cache(self) -> bool:
        transform = self.trainer.datamodule.train_transform
        if self.cache_features is False:
            return False
        deterministic = is_deterministic(transform)
        if self.cache_features is True and not deterministic:
            raise ValueError(
                "model.cache_features=true, but the training transform is random (features would be cached with "
                "one augmentation): set data.train_transform.augment=false, or model.cache_features=auto"
            )
        if not hasattr(self.trainer.datamodule, "use_features"):
            if self.cache_features is True:
                raise ValueError("model.cache_features=true needs the probing data module (selfsup.probing.datamodule.ProbeDataModule)")
            return False
        return deterministic

    def on_fit_start(self) -> None:
        if not self._use_cache():
            log.info("feature cache: off (the training transform is random); the backbone runs every step")
            return
        dm = self.trainer.datamodule
        banks = [
            extract_bank(self.features, ds, dm.val_batch_size, dm.num_workers, self.device, self.cache_dtype,
                         self.global_rank, self.trainer.world_size, self.all_gather)
            if ds is not None else None
            for ds in (dm.train_set, dm.val_set)
        ]
        dm.use_features(*banks)

    def on_train_start(self) -> None:
        if not self.schedule.steps_per_epoch:
            self.schedule.steps_per_epoch = int(self.trainer.num_training_batches)
        if not self.schedule.batch_size:
            self.schedule.batch_size = int(self.trainer.datamodule.batch_size * self.trainer.world_size)

    # ------------------------------------------------------------------ steps
    def _features(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "features" in batch:
            return {k: v.float() for k, v in batch["features"].items()}
        return self.features(batch["images"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        lr, wd = self.schedule.apply(optimizer.optimizer, self.global_step)
        logits = self.heads(self._features(batch))
        labels = batch["labels"]
        loss = sum(F.cross_entropy(out, labels) for out in logits.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"probe loss became {loss.item()} at step {self.global_step}; lower the learning rate")
        self.manual_backward(loss)
        if self.clip_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.clip_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        size = labels.shape[0]
        self.log("train/loss", loss.detach() / len(logits), prog_bar=True, batch_size=size)
        self.log_dict({"train/lr": lr, "train/wd": wd}, batch_size=size)
        return loss.detach()

    def on_validation_epoch_start(self) -> None:
        self._counts = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        labels = batch["labels"]
        for name, out in self.heads(self._features(batch)).items():
            top1, top5 = topk_correct(out, labels)
            loss = F.cross_entropy(out.float(), labels, reduction="sum")
            counts = torch.stack([top1.float(), top5.float(), loss.float(), torch.tensor(float(labels.shape[0]), device=out.device)])
            self._counts[name] = self._counts.get(name, 0) + counts

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._counts:
            return
        results = {}
        for name, counts in self._counts.items():
            c1, c5, loss, n = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
            results[name] = {"acc1": 100.0 * c1 / n, "acc5": 100.0 * c5 / n, "loss": loss / n}
        self.tracker.update(self.current_epoch, results)
        primary = self.heads.primary({n: r["acc1"] for n, r in results.items()})
        best_name = max(self.tracker.best, key=lambda n: self.tracker.best[n]["acc1"])
        best = self.tracker.best[best_name]
        self.log_dict({"val/acc1": results[primary]["acc1"], "val/acc5": results[primary]["acc5"], "val/loss": results[primary]["loss"]}, prog_bar=False)
        self.log_dict({"val/best_acc1": best["acc1"], "val/best_acc5": best["acc5"], "val/best_epoch": best["epoch"]})
        if len(results) > 1 and self.trainer.is_global_zero:  # a grid: every head to the loggers, not the summary
            flat = {f"val_heads/{n}/{k}": r[k] for n, r in results.items() for k in ("acc1", "acc5")}
            for logger in self.loggers:
                logger.log_metrics(flat, step=self.global_step)
        self._write_results(primary)

    def _write_results(self, primary: str) -> None:
        if not self.trainer.is_global_zero:
            return
        path = Path(self.trainer.default_root_dir) / "probe_results.json"
        report = {"reported_head": primary, "epoch": self.current_epoch, "best": self.tracker.best, "last": self.tracker.last}
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1, sort_keys=True)))

    # ------------------------------------------------------------------ checkpoints
    def _backbone_fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.features.backbone)
        return self._fingerprint

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        prefix = "features.backbone."
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(prefix)}
        checkpoint["probe"] = {"backbone_fingerprint": self._backbone_fingerprint(), "tracker": self.tracker.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("probe", {}).get("backbone_fingerprint")
        if saved is not None and saved != self._backbone_fingerprint():
            raise CheckpointError(
                "this probe checkpoint was trained on other backbone weights (fingerprint "
                f"{saved} vs {self._backbone_fingerprint()}): resume with the same backbone.checkpoint"
            )
        backbone = {f"features.backbone.{k}": v for k, v in self.features.backbone.state_dict().items()}
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **backbone}
        self.tracker.load_state_dict(checkpoint.get("probe", {}).get("tracker", {}))
