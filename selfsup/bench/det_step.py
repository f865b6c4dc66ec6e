"""One Mask R-CNN training step and one evaluation batch of the CPU detection recipe (det_vitdet),
built from its config.

``ours``: the recipe as configured (``LevelRoIAlign`` with ``aligned=True`` at known strides,
``ViTDetTransform`` with detectron2's mask paste). ``torchvision``: the same network with
torchvision's stock ``MultiScaleRoIAlign`` (legacy pooling, inferred scales), resize-and-pad
transform and mask paste. Same weights, same batch. Run as
``python -m selfsup.bench.det_step --impl ours|torchvision``; prints JSON.
"""

from __future__ import annotations

import argparse
import json

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from selfsup.bench.measure import time_steps
from selfsup.config import CONFIG_DIR, instantiate

def build(impl: str, overrides: list[str]) -> tuple[torch.nn.Module, int]:
    """The detector of ``experiment=det_vitdet`` (plus ``overrides``) and its image size."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=det_vitdet", *overrides])
    torch.manual_seed(0)
    model = instantiate(cfg.model.detector)
    img = int(cfg.data.image_size)
    if impl == "torchvision":
        names = model.backbone.feature_names[:-1]
        canonical = int(cfg.model.detector.roi_canonical_box_size)
        model.roi_heads.box_roi_pool = MultiScaleRoIAlign(names, 7, 0, canonical_scale=canonical)
        model.roi_heads.mask_roi_pool = MultiScaleRoIAlign(names, 14, 0, canonical_scale=canonical)
        model.transform = GeneralizedRCNNTransform(img, img, list(cfg.model.detector.image_mean), list(cfg.model.detector.image_std), size_divisible=32)
    return model, img


def batch(img: int, size: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``size`` images with 3 square instances each (fixed, so every implementation sees the same data)."""
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for _ in range(size):
        images.append(torch.rand(3, img, img, generator=g))
        boxes = []
        masks = torch.zeros(3, img, img, dtype=torch.uint8)
        for k in range(3):
            x, y = (torch.randint(0, img - 48, (2,), generator=g)).tolist()
            s = int(torch.randint(16, 48, (1,), generator=g))
            boxes.append([x, y, x + s, y + s])
            masks[k, y : y + s, x : x + s] = 1
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([1, 2, 3]), "masks": masks})
    return images, targets


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--impl", choices=("ours", "torchvision"), required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="config overrides of the det_vitdet experiment, e.g. data.image_size=256")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, img = build(a.impl, a.overrides)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images, targets = batch(img, a.batch)

    def train_step(i: int) -> None:
        torch.manual_seed(i)
        model.train()
        sum(model(images, targets).values()).backward()
        optimizer.step()
        optimizer.zero_grad()

    def eval_step(i: int) -> None:
        model.eval()
        with torch.no_grad():
            model(images)

    train = time_steps(train_step, a.warmup, a.repeats)
    evaluation = time_steps(eval_step, 1, max(2, a.repeats // 2))
    print(json.dumps({"impl": a.impl, "img": img, "batch": a.batch, "train_ms": train["ms_median"],
                      "eval_ms": evaluation["ms_median"], "peak_rss_mb": train["peak_rss_mb"]}))


if __name__ == "__main__":
    main()
