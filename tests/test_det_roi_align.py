"""RoIAlign as ViTDet pools: aligned=True at known strides, detectron2's level assignment."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from tasks.detection.roi_align import LevelRoIAlign, assign_levels

STRIDES = [4, 8, 16, 32]
NAMES = ["p2", "p3", "p4", "p5"]


def pyramid(size: int = 256, channels: int = 3) -> OrderedDict:
    torch.manual_seed(0)
    return OrderedDict((n, torch.randn(2, channels, size // s, size // s)) for n, s in zip(NAMES, STRIDES))


def boxes() -> list[torch.Tensor]:
    return [
        torch.tensor([[10.0, 12.0, 40.0, 50.0], [0.0, 0.0, 250.0, 240.0], [100.3, 30.7, 170.2, 160.9]]),
        torch.tensor([[5.5, 5.5, 20.25, 14.0], [60.0, 80.0, 190.0, 200.0]]),
    ]


def test_levels_follow_detectron2():
    sizes = [224, 112, 448, 10, 1000, 223.9]
    box_list = [torch.tensor([[0.0, 0.0, s, s] for s in sizes])]
    expected = [min(5, max(2, math.floor(4 + math.log2(s / 224 + 1e-8)))) - 2 for s in sizes]
    assert assign_levels(box_list, 2, 5, 224, 4).tolist() == expected == [2, 1, 3, 0, 3, 1]


def test_aligned_pooling_is_roi_align_v2_on_the_assigned_level():
    features, box_list = pyramid(), boxes()
    pooled = LevelRoIAlign(NAMES, 7, 0, STRIDES, True, 224, 4)(features, box_list, [(256, 256)] * 2)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(box_list)])
    levels = assign_levels(box_list, 2, 5, 224, 4)
    for k in range(len(rois)):
        level = int(levels[k])
        expected = roi_align(features[NAMES[level]], rois[k : k + 1], 7, 1 / STRIDES[level], 0, aligned=True)
        torch.testing.assert_close(pooled[k : k + 1], expected)


def test_aligned_differs_from_legacy_and_legacy_matches_torchvision():
    features, box_list = pyramid(), boxes()
    aligned = LevelRoIAlign(NAMES, 7, 0, STRIDES, True, 224, 4)(features, box_list, [(256, 256)] * 2)
    legacy = LevelRoIAlign(NAMES, 7, 0, STRIDES, False, 224, 4)(features, box_list, [(256, 256)] * 2)
    torchvision = MultiScaleRoIAlign(NAMES, 7, 0)(features, box_list, [(256, 256)] * 2)
    torch.testing.assert_close(legacy, torchvision)  # same levels and scales when images fill the batch
    assert (aligned - legacy).abs().mean() > 0.05  # the half-pixel shift of ROIAlignV2


def test_known_strides_survive_batches_of_small_jittered_images():
    """torchvision infers each level's scale from the first batch and keeps it: when large-scale
    jitter made every image of that batch smaller than the padded size, the guess is wrong forever.
    LevelRoIAlign uses the pyramid's strides."""
    features, box_list = pyramid(), boxes()
    small_first = [(80, 90), (100, 70)]  # images inside a 256x256 padded batch
    guessed = MultiScaleRoIAlign(NAMES, 7, 0)
    guessed(features, box_list, small_first)
    assert guessed.scales != [1 / s for s in STRIDES]
    ours = LevelRoIAlign(NAMES, 7, 0, STRIDES, False, 224, 4)
    torch.testing.assert_close(ours(features, box_list, small_first), MultiScaleRoIAlign(NAMES, 7, 0)(features, box_list, [(256, 256)] * 2))


def test_gradients_flow_through_the_pooling():
    features = OrderedDict((k, v.requires_grad_()) for k, v in pyramid().items())
    LevelRoIAlign(NAMES, 14, 0, STRIDES, True, 224, 4)(features, boxes(), [(256, 256)] * 2).sum().backward()
    assert all(f.grad is not None for f in features.values())
