"""Dataset-level semantic-segmentation metrics (mmseg ``IoUMetric``), from one confusion matrix.

Per class, intersection and union are summed over the *whole dataset* (ignored pixels removed)
before dividing: ``IoU_c = I_c / U_c``, ``Acc_c = I_c / label_area_c``; ``mIoU`` / ``mAcc`` are the
means over the classes where they are defined (``U_c > 0`` / ``label_area_c > 0``: a class absent
from the labels but predicted somewhere has IoU 0 and no accuracy), ``aAcc`` is the pixel accuracy.
This is the number the ADE20K papers report; ``torchmetrics.segmentation.MeanIoU`` averages
per-image IoUs instead and is not.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"IoU", "Acc"}`` (per class, NaN where undefined) and ``{"mIoU", "mAcc", "aAcc"}`` (fractions)
    of a ``[C, C]`` confusion matrix with rows = labels, columns = predictions."""
    confusion = confusion.double()
    intersection = confusion.diagonal()
    label_area, pred_area = confusion.sum(1), confusion.sum(0)
    union = label_area + pred_area - intersection
    nan = torch.full_like(intersection, float("nan"))
    iou = torch.where(union > 0, intersection / union.clamp(min=1), nan)
    acc = torch.where(label_area > 0, intersection / label_area.clamp(min=1), nan)
    return {
        "IoU": iou,
        "Acc": acc,
        "mIoU": iou.nanmean(),
        "mAcc": acc.nanmean(),
        "aAcc": intersection.sum() / label_area.sum().clamp(min=1),
    }


class SegmentationMetrics(Metric):
    """Accumulates the confusion matrix (summed across processes) and returns ``scores_from_confusion``.

    ``update(preds, labels)``: integer class maps of the same shape; pixels whose label is
    ``ignore_index`` are skipped.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        if preds.shape != labels.shape:
            raise ValueError(f"predictions {tuple(preds.shape)} and labels {tuple(labels.shape)} differ in shape")
        valid = labels != self.ignore_index
        labels, preds = labels[valid].long(), preds[valid].long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels outside [0, {self.num_classes}) and != ignore_index {self.ignore_index}")
        index = labels * self.num_classes + preds
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, torch.Tensor]:
        return scores_from_confusion(self.confusion)
