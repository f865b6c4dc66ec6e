"""COCO instance annotations (``annotations/instances_<split>.json`` + ``<split>/`` images).

``CocoInstances(root, split)`` reads the json once, keeps per-image records serialised in one byte
buffer (so forked data-loader workers do not copy Python objects page by page), and ``load(i)``
returns the image and its target: XYXY ``boxes`` from the json ``bbox``, contiguous ``labels``
(1..K in the order of the sorted category ids; 0 is the background of torchvision's detectors) and
``[N, H, W]`` ``masks`` decoded from polygons, compressed RLE or uncompressed RLE. As detectron2,
crowd annotations and polygons with fewer than 3 points are not training targets, and
``filter_empty`` drops images without any instance.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision import tv_tensors

from selfsup.data.images import load_rgb


def annotation_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(annotations/instances_<split>.json, <split>/)`` under ``root``, checked to exist."""
    root = Path(root).expanduser()
    ann_file, image_dir = root / "annotations" / f"instances_{split}.json", root / split
    if not ann_file.is_file() or not image_dir.is_dir():
        missing = [str(p) for p in (ann_file, image_dir) if not p.exists()]
        raise FileNotFoundError(
            f"data.root={root} is not a COCO-format dataset for split '{split}': missing {', '.join(missing)}. "
            "Expected <root>/annotations/instances_<split>.json and <root>/<split>/ (COCO 2017: "
            "data=coco data.root=/datasets/coco with train2017/, val2017/), or use data=embedded_coco"
        )
    return ann_file, image_dir


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """``uint8 [H, W]`` mask of a COCO segmentation: polygon list, uncompressed or compressed RLE."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode([rle])[:, :, 0]


class SerializedList:
    """A list of picklable records stored as one numpy byte buffer plus offsets."""

    def __init__(self, records: list[Any]) -> None:
        blobs = [np.frombuffer(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for r in records]
        self._offsets = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index: int) -> Any:
        start = 0 if index == 0 else int(self._offsets[index - 1])
        return pickle.loads(self._buffer[start : int(self._offsets[index])].tobytes())


def _valid(ann: dict) -> bool:
    if ann.get("iscrowd", 0):
        return False
    seg = ann.get("segmentation")
    if isinstance(seg, list) and not any(len(p) >= 6 for p in seg):
        return False
    return ann["bbox"][2] > 0 and ann["bbox"][3] > 0


class CocoInstances:
    """Images and instance targets of one COCO split (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, split: str, filter_empty: bool) -> None:
        self.ann_file, self.image_dir = annotation_paths(root, split)
        data = json.loads(self.ann_file.read_text())
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids: list[int] = [c["id"] for c in categories]
        self.category_names: list[str] = [c["name"] for c in categories]
        label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        per_image: dict[int, list[tuple[int, list[float], Any]]] = {}
        for ann in data["annotations"]:
            if _valid(ann):
                per_image.setdefault(ann["image_id"], []).append((label_of[ann["category_id"]], ann["bbox"], ann["segmentation"]))
        records = [
            {"id": img["id"], "file_name": img["file_name"], "height": img["height"], "width": img["width"],
             "instances": per_image.get(img["id"], [])}
            for img in sorted(data["images"], key=lambda i: i["id"])
            if per_image.get(img["id"]) or not filter_empty
        ]
        if not records:
            raise FileNotFoundError(f"{self.ann_file} has no images{' with instances' if filter_empty else ''}")
        self.image_ids = [r["id"] for r in records]
        self.records = SerializedList(records)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """The image (uint8 ``[3, H, W]``) and ``{"boxes", "masks", "labels", "image_id"}``."""
        record = self.records[index]
        path = self.image_dir / record["file_name"]
        image = load_rgb(path)
        h, w = record["height"], record["width"]
        if image.size != (w, h):
            raise ValueError(f"{path} is {image.size[0]}x{image.size[1]} but its annotation says {w}x{h}")
        instances = record["instances"]
        boxes = torch.tensor([[x, y, x + bw, y + bh] for _, (x, y, bw, bh), _ in instances], dtype=torch.float32).reshape(-1, 4)
        masks = np.stack([decode_segmentation(seg, h, w) for *_, seg in instances]) if instances else np.zeros((0, h, w), np.uint8)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "masks": tv_tensors.Mask(torch.from_numpy(masks)),
            "labels": torch.tensor([label for label, *_ in instances], dtype=torch.int64),
            "image_id": record["id"],
        }
        return tv_tensors.Image(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()), target

