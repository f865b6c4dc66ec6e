"""COCO box and mask AP, with faster-coco-eval or pycocotools (bit-identical), as detectron2 evaluates.

``predictions_to_coco`` turns the detector's outputs into COCO result dicts (XYWH boxes, original
category ids, compressed RLE of ``mask >= mask_threshold``, as detectron2). ``coco_evaluate`` runs ``COCOeval`` per
IoU type on the images that were predicted, removing ``bbox`` from the results before ``segm``
(otherwise ``loadRes`` takes the *box* area as the detection area, which changes APs/m/l of masks).
Metrics are reported as detectron2 does: percentages, NaN where COCO says -1 (no ground truth in
that area range).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

log = logging.getLogger("selfsup")

BACKENDS = ("faster_coco_eval", "pycocotools")
IOU_TYPES = ("bbox", "segm")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the first six COCOeval.stats


def predictions_to_coco(
    prediction: dict[str, torch.Tensor], image_id: int, category_ids: Sequence[int], mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """COCO result dicts of one image's ``{"boxes" XYXY, "scores", "labels" 1..K[, "masks" [N,1,H,W]]}``."""
    boxes = prediction["boxes"].detach().float().cpu()
    if boxes.numel() == 0:
        return []
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = prediction["scores"].detach().float().cpu().tolist()
    labels = prediction["labels"].detach().cpu().tolist()
    rles: list[dict | None] = [None] * len(scores)
    if "masks" in prediction:
        binary = (prediction["masks"][:, 0] >= mask_threshold).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")
    results = []
    for box, score, label, rle in zip(xywh, scores, labels, rles):
        result = {"image_id": int(image_id), "category_id": int(category_ids[label - 1]), "bbox": box, "score": score}
        if rle is not None:
            result["segmentation"] = rle
        results.append(result)
    return results


def _api(backend: str):
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    raise ValueError(f"evaluation backend {backend!r}; valid: {', '.join(BACKENDS)}")


def _coco(coco_cls, dataset: dict) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = coco_cls()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def coco_evaluate(
    ground_truth: dict,
    results: list[dict[str, Any]],
    iou_types: Sequence[str] = IOU_TYPES,
    backend: str = "faster_coco_eval",
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """``{"bbox_AP": ..., "segm_APl": ...}`` (percent) for COCO ``ground_truth`` (the json dict) and
    ``results``; only ``image_ids`` are evaluated when given (default: every ground-truth image)."""
    coco_cls, eval_cls = _api(backend)
    gt = _coco(coco_cls, copy.deepcopy(ground_truth))
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou type {iou_type!r}; valid: {', '.join(IOU_TYPES)}")
        dets = copy.deepcopy(results)
        if iou_type == "segm":
            for det in dets:
                det.pop("bbox", None)
        if dets:
            with contextlib.redirect_stdout(io.StringIO()):
                dt = gt.loadRes(dets)
        else:  # loadRes cannot take an empty list: an empty result set scores 0 where there is ground truth
            dt = _coco(coco_cls, {"images": ground_truth["images"], "categories": ground_truth["categories"], "annotations": []})
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            evaluator = eval_cls(gt, dt, iou_type) if backend == "pycocotools" else eval_cls(gt, dt, iou_type, print_function=print)
            if image_ids is not None:
                evaluator.params.imgIds = sorted(int(i) for i in image_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        log.info("COCO %s evaluation (%s):\n%s", iou_type, backend, summary.getvalue().rstrip())
        for name, value in zip(METRICS, evaluator.stats[: len(METRICS)]):
            metrics[f"{iou_type}_{name}"] = float(value) * 100 if value >= 0 else math.nan
    return metrics
