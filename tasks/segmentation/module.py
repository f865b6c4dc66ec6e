"""The segmentation LightningModule: layer-decayed AdamW on a poly schedule, mIoU / mAcc / aAcc.

One training step (mmseg's iteration): every parameter group's lr is set from the schedule at the
global step (times the group's layer-decay ``lr_scale``), the loss of the batch of crops is the
decode-head cross-entropy plus the weighted auxiliary one; a non-finite loss stops the run before
the weights change. Validation predicts each image (whole or sliding window) at the test scale,
resizes the logits to the annotation and accumulates one confusion matrix over the whole split.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

from selfsup.training.layer_decay import layer_decay_param_groups
from selfsup.training.poly_schedule import PolySchedule
from selfsup.training.pretrain import NonFiniteLossError
from tasks.segmentation.conv_module import resize
from tasks.segmentation.inference import SegInference
from tasks.segmentation.metrics import SegmentationMetrics
from tasks.segmentation.segmentor import Segmentor

log = logging.getLogger("selfsup")


class SegmentationModule(L.LightningModule):
    """Config keys (``configs/model/seg_*.yaml``): ``segmentor``, ``inference`` (``SegInference``),
    ``optimizer`` (a partial taking parameter groups), ``schedule`` (``PolySchedule``),
    ``layer_decay`` (1.0: none), ``weight_decay`` (not on biases, 1-D parameters, position embedding),
    ``num_classes``, ``ignore_index``, ``class_names`` (null: numbered; names the per-class table).
    """

    def __init__(
        self,
        segmentor: Segmentor,
        inference: SegInference,
        optimizer: Callable[[list[dict]], torch.optim.Optimizer],
        schedule: PolySchedule,
        layer_decay: float,
        weight_decay: float,
        num_classes: int,
        ignore_index: int,
        class_names: list[str] | None,
    ) -> None:
        super().__init__()
        self.segmentor = segmentor
        self.inference = inference
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.layer_decay = layer_decay
        self.weight_decay = weight_decay
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"model.class_names has {len(self.class_names)} names but model.num_classes={num_classes}")
        self.metrics = SegmentationMetrics(num_classes, ignore_index)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = layer_decay_param_groups(
            self.segmentor.named_parameters(), self.segmentor.encoder.depth, self.layer_decay, self.weight_decay
        )
        return self.optimizer_factory(groups)

    def on_train_start(self) -> None:
        if not self.schedule.total_steps:
            trainer = self.trainer
            self.schedule.total_steps = (
                trainer.max_steps if trainer.max_steps > 0 else trainer.max_epochs * int(trainer.num_training_batches)
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = self.schedule.learning_rate(self.global_step, group.get("lr_scale", 1.0))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.segmentor.loss(batch["images"], batch["labels"])
        if not torch.isfinite(out["loss"]):
            raise NonFiniteLossError(
                f"the loss became {out['loss'].item()} at step {self.global_step}; training stopped before the "
                "weights were updated. Lower schedule.lr, check the data, or resume from the last checkpoint."
            )
        size = batch["images"].shape[0]
        self.log("train/loss", out["loss"].detach(), prog_bar=True, batch_size=size)
        logs = {f"train/{k}": v.detach() for k, v in out.items() if k != "loss"}
        logs["train/lr"] = self.schedule.learning_rate(self.global_step)
        if batch.get("corrupt"):
            logs["data/skipped_corrupt"] = float(batch["corrupt"])
        self.log_dict(logs, batch_size=size)
        return out["loss"]

    # ------------------------------------------------------------------ evaluation
    def predict_labels(self, image: torch.Tensor, label_size: tuple[int, int]) -> torch.Tensor:
        """Class map ``[B, *label_size]`` of test-scale images ``[B,3,h,w]`` (logits resized, then argmax)."""
        logits = self.inference(self.segmentor.predict, image)
        return resize(logits, label_size, self.segmentor.align_corners).argmax(1)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        images, labels = batch["images"], batch["labels"]
        if isinstance(images, torch.Tensor):
            preds = list(self.predict_labels(images, labels.shape[-2:]))
        else:
            preds = [self.predict_labels(x[None], y.shape[-2:])[0] for x, y in zip(images, labels)]
        for pred, label in zip(preds, labels):
            self.metrics.update(pred, label)
        return {"preds": preds, "labels": list(labels), "images": list(images), "indices": batch["indices"].tolist()}

    def on_validation_epoch_end(self) -> None:
        scores = self.metrics.compute()
        self.metrics.reset()
        self.log_dict({f"val/{k}": float(scores[k]) * 100 for k in ("mIoU", "mAcc", "aAcc")})
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_per_class(scores)

    def _write_per_class(self, scores: dict[str, torch.Tensor]) -> None:
        folder = Path(self.trainer.default_root_dir) / "per_class"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step{self.global_step:07d}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["class", "IoU", "Acc"])
            for name, iou, acc in zip(self.class_names, scores["IoU"].tolist(), scores["Acc"].tolist()):
                writer.writerow([name, f"{iou * 100:.2f}", f"{acc * 100:.2f}"])
        log.info("per-class IoU/Acc written to %s", path)
