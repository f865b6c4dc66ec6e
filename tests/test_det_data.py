"""Detection data: the embedded COCO export, the COCO reader, large-scale jitter, the model's own
resize / pad / mask paste."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision import tv_tensors

from selfsup.data.embedded.coco import ensure_coco
from selfsup.data.embedded.polygons import mask_to_polygons
from selfsup.data.embedded.render import render_scene
from selfsup.data.sampling import SampleKey
from tasks.detection.coco_dataset import CocoInstances, decode_segmentation
from tasks.detection.datamodule import CocoDataModule, KeyedDetectionDataset
from tasks.detection.maskrcnn import ViTDetTransform, paste_masks_aligned
from tasks.detection.transforms import FixedSizeCrop, boxes_from_masks, eval_transform, lsj_train_transform
from tests.helpers import uncompressed_rle

SMALL = {"image_size": 64, "train_images": 12, "val_images": 4, "max_objects": 4, "seed": 0}


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return ensure_coco(tmp_path_factory.mktemp("emb") / "coco", **SMALL)


def test_export_is_deterministic_and_in_coco_layout(coco_root, tmp_path):
    assert _digest(ensure_coco(tmp_path / "again", **SMALL)) == _digest(coco_root)
    for split, count in (("train", 12), ("val", 4)):
        data = json.loads((coco_root / "annotations" / f"instances_{split}.json").read_text())
        assert len(data["images"]) == count and len(list((coco_root / split).glob("*.png"))) == count
        assert [c["id"] for c in data["categories"]] == list(range(1, 11))
        assert {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"} <= set(data["annotations"][0])


def test_annotations_decode_to_the_rendered_masks_with_polygons_and_rle(tmp_path):
    root = ensure_coco(tmp_path / "c", image_size=96, train_images=40, val_images=1, max_objects=4, seed=3)
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    kinds = {"polygon": 0, "rle": 0}
    for image in data["images"][:40]:
        scene = render_scene(np.random.default_rng([3, 0, image["id"] - 1]), 96, 4)
        visible = [(m, c) for m, c in zip(scene.masks, scene.classes) if m.any()]
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        assert len(anns) == len(visible)
        for ann, (mask, label) in zip(anns, visible):
            kinds["polygon" if isinstance(ann["segmentation"], list) else "rle"] += 1
            decoded = decode_segmentation(ann["segmentation"], 96, 96).astype(bool)
            assert np.array_equal(decoded, mask) and ann["category_id"] == label + 1 and ann["area"] == mask.sum()
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    assert kinds["polygon"] > 0 and kinds["rle"] > 0, kinds


def test_polygons_are_exact_and_holes_need_rle():
    mask = np.zeros((12, 12), bool)
    mask[2:9, 3:10] = True
    mask[10, 0] = True  # a second component
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    assert np.array_equal(mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 12, 12))).astype(bool), mask)
    mask[5, 6] = False  # a hole
    assert mask_to_polygons(mask) is None


def coco_like(root, tmp_path):
    """The export rewritten as COCO does it: sparse category ids, a crowd region in uncompressed RLE, an image
    without annotations, JPEG-free PNGs kept."""
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    sparse = {c["id"]: c["id"] * 3 for c in data["categories"]}
    for c in data["categories"]:
        c["id"] = sparse[c["id"]]
    for a in data["annotations"]:
        a["category_id"] = sparse[a["category_id"]]
    first = data["annotations"][0]
    crowd = dict(first, id=10_000, iscrowd=1, segmentation={"size": [64, 64], "counts": [64 * 10, 64 * 5, 64 * 49]})
    data["annotations"].append(crowd)
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    out = tmp_path / "cocolike"
    (out / "annotations").mkdir(parents=True)
    (out / "annotations" / "instances_train.json").write_text(json.dumps(data))
    (out / "train").symlink_to(root / "train")
    return out, data


def test_reader_maps_sparse_categories_skips_crowds_and_empty_images(coco_root, tmp_path):
    root, data = coco_like(coco_root, tmp_path)
    kept = CocoInstances(root, "train", filter_empty=True)
    everything = CocoInstances(root, "train", filter_empty=False)
    assert kept.category_ids == [3 * i for i in range(1, 11)] and kept.num_classes == 10
    assert 2 not in kept.image_ids and 2 in everything.image_ids and len(everything) == 12
    image, target = kept.load(kept.image_ids.index(data["annotations"][0]["image_id"]))
    n = sum(1 for a in data["annotations"] if a["image_id"] == data["annotations"][0]["image_id"] and not a["iscrowd"])
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    assert target["masks"].shape == (n, 64, 64) and target["boxes"].shape == (n, 4) and len(target["labels"]) == n
    assert target["labels"][0] == data["annotations"][0]["category_id"] // 3  # contiguous 1..K
    x, y, w, h = data["annotations"][0]["bbox"]
    assert target["boxes"][0].tolist() == [x, y, x + w, y + h]
    empty_image, empty = everything.load(everything.image_ids.index(2))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 64, 64)


def test_uncompressed_rle_decodes():
    mask = np.zeros((6, 5), np.uint8)
    mask[1:4, 2:4] = 1
    assert np.array_equal(decode_segmentation({"size": [6, 5], "counts": uncompressed_rle(mask)}, 6, 5), mask)
    mask[0, 0] = 1  # starts with a foreground run: counts begin with 0
    assert uncompressed_rle(mask)[0] == 0 and np.array_equal(decode_segmentation({"size": [6, 5], "counts": uncompressed_rle(mask)}, 6, 5), mask)


def test_missing_dataset_is_explained(tmp_path):
    dm = CocoDataModule("coco", str(tmp_path / "nowhere"), "train2017", "val2017", 1024, 80, eval_transform(), eval_transform(),
                        2, 2, 0, False, False, True, True, 0, False, True, None)
    with pytest.raises(FileNotFoundError, match=r"missing .*instances_train2017.json.*data=embedded_coco"):
        dm.setup()


def test_wrong_number_of_classes_is_explained(coco_root):
    dm = CocoDataModule("embedded", str(coco_root), "train", "val", 64, 80, eval_transform(), eval_transform(),
                        2, 2, 0, False, False, True, True, 0, False, True, SMALL)
    with pytest.raises(ValueError, match="has 10 categories but data.num_classes=80; set data.num_classes=10"):
        dm.setup()


# ---------------------------------------------------------------- augmentation
def test_large_scale_jitter_keeps_image_boxes_and_masks_together(coco_root):
    source = CocoInstances(coco_root, "train", True)
    dataset = KeyedDetectionDataset(source, lsj_train_transform(64, (0.3, 2.0), 0.5, "shared", True), seed=0, skip_corrupt=False)
    sizes = set()
    for i in range(len(source)):
        sample = dataset[SampleKey(i, 0, 0, 0)]
        image, target = sample["image"], sample["target"]
        assert image.dtype == torch.float32 and image.max() <= 1 and max(image.shape[1:]) <= 64
        assert type(target["boxes"]) is torch.Tensor and target["masks"].shape[1:] == image.shape[1:]
        assert torch.equal(target["boxes"], boxes_from_masks(target["masks"].bool()))  # tight around what the crop left
        assert (target["masks"].flatten(1).sum(1) > 0).all()  # instances cropped away are gone
        sizes.add(tuple(image.shape[1:]))
        again = dataset[SampleKey(i, 0, 3, 0)]
        assert torch.equal(again["image"], image)  # the same sample, epoch and seed: the same augmentation
    assert len(sizes) > 3  # scale jitter: images smaller than the crop stay small (the model pads)
    moved = [not torch.equal(dataset[SampleKey(i, 1, 0, 0)]["image"], dataset[SampleKey(i, 0, 0, 0)]["image"]) for i in range(6)]
    assert any(moved)


def test_fixed_size_crop_offsets_shared_or_independent():
    image = tv_tensors.Image(torch.arange(200 * 100, dtype=torch.float32).reshape(1, 200, 100))
    tops_lefts = {"shared": [], "independent": []}
    for mode in tops_lefts:
        crop = FixedSizeCrop(50, mode)
        for seed in range(20):
            torch.manual_seed(seed)
            params = crop.make_params([image])
            assert params["height"] == params["width"] == 50
            tops_lefts[mode].append((params["top"] / 150, params["left"] / 50))
    assert all(abs(t - left) <= 0.02 for t, left in tops_lefts["shared"])  # detectron2: one draw for both axes
    assert any(abs(t - left) > 0.2 for t, left in tops_lefts["independent"])
    small = tv_tensors.Image(torch.zeros(3, 30, 40))
    assert FixedSizeCrop(64)(small).shape == (3, 30, 40)  # never pads


def test_boxes_from_masks():
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 9, 11] = True
    assert boxes_from_masks(masks).tolist() == [[3, 2, 9, 5], [11, 9, 12, 10], [0, 0, 0, 0]]


# ---------------------------------------------------------------- the detector's own transform
def test_vitdet_transform_resizes_test_images_and_pads_to_a_square():
    t = ViTDetTransform(64, 64, 32, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], "aligned")
    t.eval()
    batch, _ = t([torch.full((3, 40, 20), 0.75), torch.full((3, 100, 50), 0.75)])
    assert batch.tensors.shape == (2, 3, 64, 64) and batch.image_sizes == [(64, 32), (64, 32)]
    assert batch.tensors[0, :, :64, :32].allclose(torch.tensor(1.0)) and batch.tensors[0, :, :, 32:].abs().sum() == 0
    t.train()
    batch, _ = t([torch.zeros(3, 30, 40), torch.zeros(3, 64, 50)], [{"boxes": torch.zeros(0, 4)}] * 2)
    assert batch.image_sizes == [(30, 40), (64, 50)] and batch.tensors.shape == (2, 3, 64, 64)  # no resize in training
    with pytest.raises(ValueError, match="larger than square_pad=64"):
        t([torch.zeros(3, 70, 40)], [{"boxes": torch.zeros(0, 4)}])


def test_aligned_mask_paste_covers_the_box():
    masks = torch.ones(2, 1, 28, 28)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 26.0], [0.0, 0.0, 64.0, 48.0]])
    pasted = paste_masks_aligned(masks, boxes, (48, 64))
    inside = torch.zeros(48, 64, dtype=torch.bool)
    inside[20:26, 10:30] = True
    assert torch.equal(pasted[0, 0] >= 0.5, inside) and (pasted[1] >= 0.5).all()
    chunked = paste_masks_aligned(masks, boxes, (48, 64), chunk_pixels=1)
    assert torch.equal(chunked, pasted)


def test_corrupt_images_are_named_or_skipped(coco_root, tmp_path):
    root = tmp_path / "broken"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text((coco_root / "annotations" / "instances_train.json").read_text())
    (root / "train").mkdir()
    for p in (coco_root / "train").iterdir():
        (root / "train" / p.name).write_bytes(p.read_bytes())
    first = sorted((root / "train").iterdir())[0]
    first.write_bytes(first.read_bytes()[:100])
    source = CocoInstances(root, "train", True)
    from selfsup.data.images import CorruptImageError

    with pytest.raises(CorruptImageError, match=first.name):
        KeyedDetectionDataset(source, eval_transform(), 0, skip_corrupt=False)[SampleKey(0, 0, 0, 0)]
    sample = KeyedDetectionDataset(source, eval_transform(), 0, skip_corrupt=True)[SampleKey(0, 0, 0, 0)]
    assert sample["corrupt"] == 1 and sample["image"].shape == (3, 64, 64)
    Image.open(sorted((root / "train").iterdir())[1]).verify()
