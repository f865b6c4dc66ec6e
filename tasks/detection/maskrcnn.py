"""torchvision's Mask R-CNN assembled as ViTDet's (detectron2 ``mask_rcnn_vitdet.py``).

``vitdet_mask_rcnn(backbone=SimpleFeaturePyramid(...), ...)`` returns a
``torchvision.models.detection.MaskRCNN`` with: anchors one size per level and three aspect ratios;
an RPN head of ``rpn_conv_depth`` 3x3 convs (ViTDet: 2); RoIAlign with ``aligned=True`` at known
strides (``LevelRoIAlign``); a box head of ``box_head_convs`` 3x3 convs + ``box_head_fcs`` fully
connected layers (ViTDet "4conv1fc": [256]*4, [1024]) and a mask head of ``mask_head_convs``
(ViTDet: [256]*4), both with channel LayerNorm (``head_norm: LN``); predictor initialisation as
detectron2 (class scores N(0, 0.01), box deltas N(0, 0.001), mask logits N(0, 0.001)).

``ViTDetTransform`` replaces torchvision's resize-and-pad: training images are used as the data
pipeline made them (large-scale jitter already resized and cropped them), test images are resized
so the longest side is ``test_size`` (detectron2 ``ResizeShortestEdge(S, max_size=S)``), and a
batch is zero-padded (after normalisation) to ``square_pad x square_pad`` (ViTDet: 1024) or, with
``square_pad: 0``, to a multiple of the pyramid's largest stride. Predicted masks are pasted into
the image as detectron2 does (``mask_paste: aligned``: bilinear ``grid_sample`` at pixel centres)
or as torchvision does (``mask_paste: torchvision``: a padded box, resized).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from tasks.detection.pyramid import SimpleFeaturePyramid
from tasks.detection.roi_align import LevelRoIAlign


MASK_PASTES = ("aligned", "torchvision")


def paste_masks_aligned(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], chunk_pixels: int = 1 << 25) -> torch.Tensor:
    """``[N, 1, M, M]`` mask probabilities into ``[N, 1, H, W]``: each image pixel centre samples its
    box's mask bilinearly, zero beyond it (detectron2 ``_do_paste_mask`` over the whole image, as it
    runs on GPU). Done in chunks of about ``chunk_pixels`` output pixels to bound memory."""
    n = masks.shape[0]
    h, w = size
    out = masks.new_zeros((n, 1, h, w))
    ys = torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5
    xs = torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5
    step = max(1, chunk_pixels // max(1, h * w))
    for start in range(0, n, step):
        chunk = slice(start, min(n, start + step))
        x0, y0, x1, y1 = boxes[chunk].to(masks.dtype).split(1, dim=1)
        m = x0.shape[0]
        gy = ((ys - y0) / (y1 - y0) * 2 - 1)[:, :, None].expand(m, h, w)
        gx = ((xs - x0) / (x1 - x0) * 2 - 1)[:, None, :].expand(m, h, w)
        out[chunk] = F.grid_sample(masks[chunk], torch.stack([gx, gy], dim=3), align_corners=False)
    return out


class ViTDetTransform(GeneralizedRCNNTransform):
    """Normalise; resize test images only; pad to a fixed square; paste masks (see the module docstring)."""

    def __init__(
        self, test_size: int, square_pad: int, size_divisible: int, image_mean: Sequence[float], image_std: Sequence[float], mask_paste: str
    ) -> None:
        super().__init__(test_size, test_size, list(image_mean), list(image_std), size_divisible=size_divisible)
        if mask_paste not in MASK_PASTES:
            raise ValueError(f"mask_paste={mask_paste!r}; valid: {', '.join(MASK_PASTES)}")
        self.test_size = test_size
        self.square_pad = square_pad
        self.mask_paste = mask_paste

    def postprocess(self, result: list[dict], image_shapes: list[tuple[int, int]], original_image_sizes: list[tuple[int, int]]) -> list[dict]:
        if self.training:
            return result
        for pred, size, original in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], size, original)
            if "masks" in pred:
                paste = paste_masks_aligned if self.mask_paste == "aligned" else paste_masks_in_image
                pred["masks"] = paste(pred["masks"], pred["boxes"], original)
        return result

    def resize(self, image: torch.Tensor, target: dict | None = None) -> tuple[torch.Tensor, dict | None]:
        if self.training:
            return image, target
        h, w = image.shape[-2:]
        scale = self.test_size / min(h, w)
        if max(h, w) * scale > self.test_size:
            scale = self.test_size / max(h, w)
        size = (int(h * scale + 0.5), int(w * scale + 0.5))
        if size != (h, w):
            image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)[0]
        return image, target

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
        if not self.square_pad:
            return super().batch_images(images, size_divisible)
        too_big = [tuple(i.shape[-2:]) for i in images if max(i.shape[-2:]) > self.square_pad]
        if too_big:
            raise ValueError(f"images {too_big} are larger than square_pad={self.square_pad}; crop them in the data pipeline")
        batch = images[0].new_zeros((len(images), images[0].shape[0], self.square_pad, self.square_pad))
        for out, image in zip(batch, images):
            out[:, : image.shape[1], : image.shape[2]].copy_(image)
        return batch


def _head_norm(kind: str):
    if kind not in ("LN", ""):
        raise ValueError(f"head_norm={kind!r}; valid: 'LN' or ''")
    return (lambda c: LayerNorm2d(c, eps=1e-6)) if kind == "LN" else None


def vitdet_mask_rcnn(
    backbone: SimpleFeaturePyramid,
    num_classes: int,
    image_size: int,
    square_pad: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    anchor_sizes: Sequence[int],
    aspect_ratios: Sequence[float],
    rpn_conv_depth: int,
    rpn_pre_nms_top_n_train: int,
    rpn_pre_nms_top_n_test: int,
    rpn_post_nms_top_n_train: int,
    rpn_post_nms_top_n_test: int,
    rpn_nms_thresh: float,
    rpn_batch_size_per_image: int,
    rpn_positive_fraction: float,
    roi_aligned: bool,
    roi_sampling_ratio: int,
    roi_canonical_box_size: float,
    box_head_convs: Sequence[int],
    box_head_fcs: Sequence[int],
    mask_head_convs: Sequence[int],
    mask_predictor_dim: int,
    head_norm: str,
    box_batch_size_per_image: int,
    box_positive_fraction: float,
    box_score_thresh: float,
    box_nms_thresh: float,
    box_detections_per_img: int,
    mask_paste: str,
) -> MaskRCNN:
    """The detector (see the module docstring). ``num_classes`` excludes the background.

    Config keys: every argument (``model.detector`` in ``configs/model/maskrcnn_vitdet.yaml``).
    """
    levels = len(backbone.feature_names)
    if len(anchor_sizes) != levels:
        raise ValueError(f"anchor_sizes needs one size per pyramid level {backbone.feature_names}, got {list(anchor_sizes)}")
    channels = backbone.out_channels
    pooled = backbone.feature_names[:-1] if backbone.top_block else backbone.feature_names
    strides = backbone.strides[: len(pooled)]
    norm = _head_norm(head_norm)

    def pooler(size: int) -> LevelRoIAlign:
        return LevelRoIAlign(pooled, size, roi_sampling_ratio, strides, roi_aligned, roi_canonical_box_size, 4)

    anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), (tuple(float(a) for a in aspect_ratios),) * levels)
    box_head = FastRCNNConvFCHead((channels, 7, 7), list(box_head_convs), list(box_head_fcs), norm_layer=norm)
    box_predictor = FastRCNNPredictor(box_head_fcs[-1], num_classes + 1)
    nn.init.normal_(box_predictor.cls_score.weight, std=0.01)
    nn.init.normal_(box_predictor.bbox_pred.weight, std=0.001)
    for layer in (box_predictor.cls_score, box_predictor.bbox_pred):
        nn.init.zeros_(layer.bias)
    mask_head = MaskRCNNHeads(channels, list(mask_head_convs), 1, norm_layer=norm)
    mask_predictor = MaskRCNNPredictor(mask_head_convs[-1], mask_predictor_dim, num_classes + 1)
    nn.init.normal_(mask_predictor.mask_fcn_logits.weight, std=0.001)
    nn.init.zeros_(mask_predictor.mask_fcn_logits.bias)

    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=image_size,
        max_size=image_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, len(aspect_ratios), conv_depth=rpn_conv_depth),
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        rpn_nms_thresh=rpn_nms_thresh,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_positive_fraction=rpn_positive_fraction,
        box_roi_pool=pooler(7),
        box_head=box_head,
        box_predictor=box_predictor,
        box_score_thresh=box_score_thresh,
        box_nms_thresh=box_nms_thresh,
        box_detections_per_img=box_detections_per_img,
        box_batch_size_per_image=box_batch_size_per_image,
        box_positive_fraction=box_positive_fraction,
        mask_roi_pool=pooler(14),
        mask_head=mask_head,
        mask_predictor=mask_predictor,
    )
    divisible = backbone.size_divisibility
    if square_pad and square_pad % divisible:
        raise ValueError(f"square_pad={square_pad} must be a multiple of the pyramid's stride {divisible}")
    model.transform = ViTDetTransform(image_size, square_pad, divisible, image_mean, image_std, mask_paste)
    return model
