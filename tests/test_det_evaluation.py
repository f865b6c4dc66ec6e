"""COCO evaluation: exactly pycocotools' numbers, the same from faster-coco-eval, bbox removed for segm."""

from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tasks.detection.evaluation import METRICS, coco_evaluate, predictions_to_coco
from tests.helpers import uncompressed_rle


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r


def toy_set() -> tuple[dict, list[dict]]:
    """A fixed ground truth (polygons, RLE, a crowd region, two sparse category ids, three sizes) and
    detections with masks: matches, misses, false positives, duplicates, a wrong class."""
    h = w = 200
    rng = np.random.default_rng(7)
    images = [{"id": i, "file_name": f"{i}.png", "height": h, "width": w} for i in (3, 5, 8, 11)]
    categories = [{"id": 2, "name": "a"}, {"id": 7, "name": "b"}]
    gts, dets = [], []

    def add_gt(image_id, cat, mask, crowd=0, polygon=None):
        ys, xs = np.nonzero(mask)
        seg = polygon if polygon is not None else _rle(mask)
        gts.append({"id": len(gts) + 1, "image_id": image_id, "category_id": cat, "segmentation": seg, "iscrowd": crowd,
                    "area": float(mask.sum()), "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]})

    def add_det(image_id, cat, mask, score, box=None):
        ys, xs = np.nonzero(mask)
        bbox = box or [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
        dets.append({"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score, "segmentation": _rle(mask)})

    for image in images:
        for k in range(4):
            r = float(rng.choice([8, 14, 25, 60]))  # small (< 32^2), medium and large areas
            cx, cy = rng.uniform(r, w - r, size=2)
            cat = int(rng.choice([2, 7]))
            mask = _disc(h, w, cx, cy, r)
            if k == 0:  # a square as a polygon
                x0, y0 = int(cx - r), int(cy - r)
                sq = np.zeros((h, w), bool)
                sq[y0 : y0 + int(2 * r), x0 : x0 + int(2 * r)] = True
                add_gt(image["id"], cat, sq, polygon=[[x0, y0, x0 + int(2 * r), y0, x0 + int(2 * r), y0 + int(2 * r), x0, y0 + int(2 * r)]])
                mask = sq
            else:
                add_gt(image["id"], cat, mask)
            if k < 3:  # detected, jittered
                jit = _disc(h, w, cx + rng.normal(0, r * 0.15), cy + rng.normal(0, r * 0.15), r * rng.uniform(0.8, 1.2))
                add_det(image["id"], cat, jit, float(rng.uniform(0.3, 1.0)))
            if k == 1:  # a duplicate and a wrong class
                add_det(image["id"], cat, mask, float(rng.uniform(0.05, 0.5)))
                add_det(image["id"], 9 - cat, mask, float(rng.uniform(0.05, 0.9)))
        fp = _disc(h, w, *rng.uniform(30, 170, size=2), 12)
        add_det(image["id"], 2, fp, float(rng.uniform(0.05, 0.95)))
    # a crowd region (uncompressed RLE, as COCO writes crowds) with a detection inside it: ignored, not a false positive
    crowd = np.zeros((h, w), bool)
    crowd[150:190, 10:90] = True
    add_gt(5, 2, crowd, crowd=1)
    gts[-1]["segmentation"] = {"size": [h, w], "counts": uncompressed_rle(crowd)}
    inside = np.zeros((h, w), bool)
    inside[155:180, 20:60] = True
    add_det(5, 2, inside, 0.99)
    # confident false positives whose box is much larger than their mask (box area medium, mask area
    # small): counted among small detections only when the mask area is used
    for image_id in (3, 5, 8, 11):
        occupied = np.zeros((h, w), bool)
        for a in gts:
            if a["image_id"] == image_id:
                x, y, bw, bh = (int(v) for v in a["bbox"])
                occupied[max(0, y - 12) : y + bh + 12, max(0, x - 12) : x + bw + 12] = True
        ys, xs = np.nonzero(~occupied[10:-10, 10:-10])
        if len(xs):
            cx, cy = float(xs[len(xs) // 2] + 10), float(ys[len(ys) // 2] + 10)
            add_det(image_id, 7, _disc(h, w, cx, cy, 7), 0.98, box=[cx - 30, cy - 30, 60.0, 60.0])
    return {"images": images, "annotations": gts, "categories": categories}, dets


def pycocotools_reference(gt: dict, dets: list[dict], iou_type: str, pop_bbox: bool) -> list[float]:
    """The plain pycocotools recipe (detectron2's ``_evaluate_predictions_on_coco``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        results = copy.deepcopy(dets)
        if pop_bbox:
            for r in results:
                r.pop("bbox", None)
        evaluator = COCOeval(coco, coco.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) * 100 if v >= 0 else math.nan for v in evaluator.stats[:6]]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_evaluator_gives_exactly_pycocotools_ap(iou_type):
    gt, dets = toy_set()
    ours = coco_evaluate(gt, dets, [iou_type], backend="pycocotools")
    reference = pycocotools_reference(gt, dets, iou_type, pop_bbox=iou_type == "segm")
    assert all(_same(ours[f"{iou_type}_{m}"], r) for m, r in zip(METRICS, reference)), (ours, reference)
    assert 5 < ours[f"{iou_type}_AP"] < 95  # a non-trivial set: neither empty nor perfect


def test_faster_coco_eval_and_pycocotools_give_identical_numbers():
    gt, dets = toy_set()
    fast = coco_evaluate(gt, dets, ["bbox", "segm"], backend="faster_coco_eval")
    slow = coco_evaluate(gt, dets, ["bbox", "segm"], backend="pycocotools")
    assert fast.keys() == slow.keys() and len(fast) == 12
    # identical up to the last bits of the float mean over precisions (summation order): |diff| < 1e-12
    assert all(_same(fast[k], slow[k]) or abs(fast[k] - slow[k]) < 1e-12 for k in fast), (fast, slow)


def test_bbox_is_removed_before_mask_evaluation():
    """With the box kept, loadRes uses the box area as the detection area: mask APs/APm change."""
    gt, dets = toy_set()
    kept = pycocotools_reference(gt, dets, "segm", pop_bbox=False)
    popped = pycocotools_reference(gt, dets, "segm", pop_bbox=True)
    assert kept != popped  # the toy set is built so that it matters
    ours = coco_evaluate(gt, dets, ["segm"], backend="pycocotools")
    assert [ours[f"segm_{m}"] for m in METRICS] == popped
    assert all("bbox" in d for d in dets)  # the caller's results are not modified


def test_only_the_given_images_are_evaluated_and_empty_results_score_zero():
    gt, dets = toy_set()
    first = coco_evaluate(gt, [d for d in dets if d["image_id"] == 3], ["bbox"], "pycocotools", image_ids=[3])
    subset = {"images": [i for i in gt["images"] if i["id"] == 3], "categories": gt["categories"],
              "annotations": [a for a in gt["annotations"] if a["image_id"] == 3]}
    assert first == coco_evaluate(subset, [d for d in dets if d["image_id"] == 3], ["bbox"], "pycocotools")
    for backend in ("pycocotools", "faster_coco_eval"):
        empty = coco_evaluate(gt, [], ["bbox", "segm"], backend)
        assert empty["bbox_AP"] == 0.0 and empty["segm_AP50"] == 0.0


def test_predictions_become_coco_results():
    masks = torch.zeros(2, 1, 20, 30)
    masks[0, 0, 2:6, 3:9] = 0.9
    masks[1, 0, 10:12, 0:4] = 0.5  # exactly the threshold: kept (>=, as detectron2)
    prediction = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 6.0], [0.0, 10.0, 4.0, 12.0]]), "scores": torch.tensor([0.9, 0.4]),
                  "labels": torch.tensor([2, 1]), "masks": masks}
    results = predictions_to_coco(prediction, image_id=42, category_ids=[5, 11])
    assert [r["category_id"] for r in results] == [11, 5]
    assert results[0]["bbox"] == [3.0, 2.0, 6.0, 4.0] and results[0]["image_id"] == 42
    decoded = mask_utils.decode({"size": results[1]["segmentation"]["size"], "counts": results[1]["segmentation"]["counts"].encode()})
    assert decoded.sum() == 8 and decoded[10:12, 0:4].all()
    assert predictions_to_coco({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}, 1, [1]) == []
