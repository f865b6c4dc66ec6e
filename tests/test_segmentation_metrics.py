"""mIoU / mAcc / aAcc: the dataset-level definition of ADE20K papers, against an independent numpy count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from tasks.segmentation.metrics import SegmentationMetrics, scores_from_confusion

IGNORE = 255


def numpy_reference(preds: list[np.ndarray], labels: list[np.ndarray], num_classes: int) -> dict:
    """mmseg ``IoUMetric`` spelled out: per class, pixel counts summed over every image first."""
    inter, union, label_area = np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes)
    for pred, label in zip(preds, labels):
        keep = label != IGNORE
        pred, label = pred[keep], label[keep]
        for c in range(num_classes):
            p, t = pred == c, label == c
            inter[c] += np.sum(p & t)
            union[c] += np.sum(p | t)
            label_area[c] += np.sum(t)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        acc = np.where(label_area > 0, inter / label_area, np.nan)
    return {"IoU": iou, "Acc": acc, "mIoU": np.nanmean(iou), "mAcc": np.nanmean(acc), "aAcc": inter.sum() / label_area.sum()}


def _random_dataset(seed: int, num_classes: int, absent: tuple[int, ...], never_predicted: tuple[int, ...]):
    rng = np.random.default_rng(seed)
    preds, labels = [], []
    present = [c for c in range(num_classes) if c not in absent]
    for _ in range(7):
        h, w = rng.integers(20, 60, size=2)
        label = rng.choice(present, size=(h, w))
        label[rng.random((h, w)) < 0.2] = IGNORE  # ignored pixels
        pred = np.where(rng.random((h, w)) < 0.5, label, rng.integers(0, num_classes, (h, w)))
        pred[pred == IGNORE] = 0
        for c in never_predicted:
            pred[pred == c] = (c + 1) % num_classes
        preds.append(pred)
        labels.append(label)
    return preds, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_an_independent_numpy_count_with_ignore_and_absent_classes(seed):
    num_classes = 12
    absent, never_predicted = (3, 7), (7, 9)  # 3: predicted but absent (IoU 0, no Acc); 7: neither (NaN)
    preds, labels = _random_dataset(seed, num_classes, absent, never_predicted)
    metric = SegmentationMetrics(num_classes, IGNORE)
    for pred, label in zip(preds, labels):
        metric.update(torch.from_numpy(pred), torch.from_numpy(label))
    ours = {k: v.numpy() for k, v in metric.compute().items()}
    ref = numpy_reference(preds, labels, num_classes)

    np.testing.assert_allclose(ours["IoU"], ref["IoU"], rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(ours["Acc"], ref["Acc"], rtol=0, atol=1e-12, equal_nan=True)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert abs(float(ours[key]) - ref[key]) < 1e-12, key
    assert ours["IoU"][3] == 0 and np.isnan(ours["Acc"][3])  # predicted, never labelled
    assert np.isnan(ours["IoU"][7]) and np.isnan(ours["Acc"][7])  # neither: excluded from the means

    # the same number as torchmetrics' dataset-level macro Jaccard index (which skips union-0 classes)
    jaccard = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=IGNORE)
    for pred, label in zip(preds, labels):
        jaccard.update(torch.from_numpy(pred).flatten(), torch.from_numpy(label).flatten())
    assert abs(jaccard.compute().item() - ref["mIoU"]) < 1e-6


def test_dataset_level_is_not_the_mean_of_per_image_ious():
    """Summing before dividing: one big image with a good score outweighs a small bad one."""
    big = np.zeros((100, 100), np.int64)
    small_label, small_pred = np.zeros((2, 2), np.int64), np.ones((2, 2), np.int64)
    metric = SegmentationMetrics(2, IGNORE)
    metric.update(torch.from_numpy(big), torch.from_numpy(big))
    metric.update(torch.from_numpy(small_pred), torch.from_numpy(small_label))
    scores = metric.compute()
    expected_iou0 = 10000 / (10004 + 0)  # class 0: I = 10000, U = 10004 (4 false negatives)
    assert abs(scores["IoU"][0].item() - expected_iou0) < 1e-12
    assert scores["IoU"][1].item() == 0.0  # predicted on 4 pixels, never labelled
    assert abs(scores["mIoU"].item() - expected_iou0 / 2) < 1e-12


def test_update_checks_shapes_and_label_range():
    metric = SegmentationMetrics(3, IGNORE)
    with pytest.raises(ValueError, match="differ in shape"):
        metric.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels outside"):
        metric.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 5))
    metric.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), IGNORE))  # all ignored: fine
    assert metric.confusion.sum() == 0


def test_scores_of_a_perfect_and_an_empty_confusion():
    perfect = scores_from_confusion(torch.diag(torch.tensor([5, 0, 7])))
    assert perfect["mIoU"] == 1 and perfect["mAcc"] == 1 and perfect["aAcc"] == 1
    assert torch.isnan(perfect["IoU"][1])
