"""The detection LightningModule: trains a torchvision Mask R-CNN and evaluates it the COCO way.

One training step (manual optimisation, everything a function of ``global_step``, so a resumed run
continues exactly)::

    seed the global RNG from (seed, step, rank)   # RPN / RoI sampling, drop-path
    lr = schedule.lr(step); every group gets lr * its layer-decay lr_scale
    losses = detector(images, targets)            # RPN + box + mask losses (torchvision)
    stop with a message if their sum is not finite (weights untouched)
    backward; [clip]; optimizer.step; zero_grad

Validation runs the detector in eval mode, turns each image's predictions into COCO results
(``predictions_to_coco``), gathers them from every process, and rank 0 evaluates box and mask AP
(``coco_evaluate``), writes ``<output_dir>/coco_instances_results.json`` and ``metrics.json`` and
draws the first ``num_visualized`` validation images into ``<output_dir>/vis/``. Metrics are logged
as ``val/bbox_AP``, ``val/bbox_AP50``, ... ``val/segm_APl`` (percent) and end up in the summary line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from selfsup.models.vit import JEPAViT
from selfsup.training.files import atomic_write
from selfsup.training.pretrain import NonFiniteLossError
from selfsup.training.step_schedule import WarmupMultiStepSchedule
from selfsup.utils.seeding import derive_seed
from tasks.detection.evaluation import coco_evaluate, predictions_to_coco
from tasks.detection.optim import detection_param_groups
from tasks.detection.visualize import save_comparison

log = logging.getLogger("selfsup")


def count_vit_blocks(model: nn.Module) -> int:
    vits = [m for m in model.modules() if isinstance(m, JEPAViT)]
    if len(vits) != 1:
        raise ValueError(f"the detector must contain exactly one JEPAViT backbone, found {len(vits)}")
    return len(vits[0].blocks)


class DetectionModule(L.LightningModule):
    """Mask R-CNN training and COCO evaluation (see the module docstring).

    Config keys (``configs/model/maskrcnn_vitdet.yaml``): ``detector`` (a torchvision detector),
    ``optimizer`` (a partial taking parameter groups), ``schedule`` (``WarmupMultiStepSchedule``),
    ``layer_decay`` (ViT-B: 0.7), ``weight_decay``, ``no_weight_decay`` (vitdet | mae),
    ``clip_grad_norm`` (null: none, as ViTDet), ``eval_backend`` (faster_coco_eval | pycocotools),
    ``iou_types``, ``mask_threshold``, ``output_dir``, ``num_visualized``, ``visualize_score_threshold``,
    ``seed`` (with the step and rank, seeds the sampling of anchors and RoIs and drop-path).
    """

    def __init__(
        self,
        detector: nn.Module,
        optimizer: Callable[[list[dict]], torch.optim.Optimizer],
        schedule: WarmupMultiStepSchedule,
        layer_decay: float,
        weight_decay: float,
        no_weight_decay: str,
        clip_grad_norm: float | None,
        eval_backend: str,
        iou_types: Sequence[str],
        mask_threshold: float,
        output_dir: str,
        num_visualized: int,
        visualize_score_threshold: float,
        seed: int,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.detector = detector
        self.num_layers = count_vit_blocks(detector)
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.layer_decay, self.weight_decay, self.no_weight_decay = layer_decay, weight_decay, no_weight_decay
        self.clip_grad_norm = clip_grad_norm
        self.eval_backend, self.iou_types, self.mask_threshold = eval_backend, list(iou_types), mask_threshold
        self.output_dir = Path(output_dir)
        self.num_visualized, self.visualize_score_threshold = num_visualized, visualize_score_threshold
        self.seed = seed
        self._results: dict[int, list[dict]] = {}
        self._shown: list[tuple[torch.Tensor, dict, dict]] = []
        self._ground_truth: dict | None = None

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = detection_param_groups(self.detector, self.num_layers, self.layer_decay, self.weight_decay, self.no_weight_decay)
        return self.optimizer_factory(groups)

    def on_train_start(self) -> None:
        if not self.schedule.steps_per_epoch:
            self.schedule.steps_per_epoch = int(self.trainer.num_training_batches)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        optimizer = self.optimizers()
        step = self.global_step
        torch.manual_seed(derive_seed(self.seed, step, self.global_rank))
        lr = self.schedule.lr(step)
        for group in optimizer.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        losses = self.detector(batch["images"], batch["targets"])
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at step {step} (epoch {self.current_epoch}; "
                f"{', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())}); training stopped before the "
                "weights were updated. Lower schedule.base_lr, check the annotations, or resume from the last checkpoint."
            )
        self.manual_backward(loss)
        if self.clip_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.clip_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        size = len(batch["images"])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=size)
        self.log("train/lr", lr, batch_size=size)
        if batch.get("corrupt"):
            self.log("data/skipped_corrupt", float(batch["corrupt"]), batch_size=size)
        return {"loss": loss.detach()}

    # ------------------------------------------------------------------ evaluation
    def _categories(self) -> tuple[list[int], list[str]]:
        instances = self.trainer.datamodule.val_instances
        return instances.category_ids, instances.category_names

    def on_validation_epoch_start(self) -> None:
        self._results, self._shown = {}, []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        category_ids, _ = self._categories()
        predictions = self.detector(batch["images"])
        for image, target, prediction in zip(batch["images"], batch["targets"], predictions):
            image_id = int(target["image_id"])
            self._results[image_id] = predictions_to_coco(prediction, image_id, category_ids, self.mask_threshold)
            if len(self._shown) < self.num_visualized and self.trainer.is_global_zero:
                keep = {k: v.detach().cpu() for k, v in prediction.items()}
                self._shown.append((image.detach().cpu(), {k: v.cpu() if torch.is_tensor(v) else v for k, v in target.items()}, keep))

    def _gathered_results(self) -> dict[int, list[dict]]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self._results
        parts: list[dict[int, list[dict]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self._results)
        merged: dict[int, list[dict]] = {}
        for part in parts:
            merged.update(part or {})  # the padded tail of a shard repeats images: one entry per id
        return merged

    def _ground_truth_dataset(self) -> dict:
        if self._ground_truth is None:
            self._ground_truth = json.loads(Path(self.trainer.datamodule.val_instances.ann_file).read_text())
        return self._ground_truth

    def evaluate(self, results: dict[int, list[dict]]) -> dict[str, float]:
        """COCO metrics of ``results`` (image id -> result dicts) on those images; writes the artefacts."""
        flat = [r for image_id in sorted(results) for r in results[image_id]]
        metrics = coco_evaluate(self._ground_truth_dataset(), flat, self.iou_types, self.eval_backend, image_ids=sorted(results))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.output_dir / "coco_instances_results.json", lambda tmp: Path(tmp).write_text(json.dumps(flat)))
        record = {"epoch": self.current_epoch, "global_step": self.global_step, "images": len(results), **metrics}
        atomic_write(self.output_dir / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
        _, names = self._categories()
        (self.output_dir / "vis").mkdir(exist_ok=True)
        for image, target, prediction in self._shown:
            save_comparison(self.output_dir / "vis" / f"{int(target['image_id']):06d}.png", image, target, prediction, names, self.visualize_score_threshold)
        return metrics

    def on_validation_epoch_end(self) -> None:
        results = self._gathered_results()
        metrics = self.evaluate(results) if self.trainer.is_global_zero else {}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, batch_size=1)
        if self.trainer.is_global_zero:
            log.info("COCO evaluation on %d images: %s", len(results), ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
