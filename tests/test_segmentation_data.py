"""ADE20K-format data: the embedded export, reduce-zero-label, bad inputs, the mmseg augmentation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from selfsup.data.embedded.ade20k import ensure_ade20k
from selfsup.data.images import CorruptImageError
from selfsup.data.sampling import SampleKey
from tasks.segmentation.datamodule import SegmentationDataModule
from tasks.segmentation.dataset import ADE20KSource, reduce_zero_label
from tasks.segmentation.transforms import (
    PhotoMetricDistortion,
    RandomCropCatMax,
    RandomResize,
    SegEvalTransform,
    rescale_size,
    seg_train_transform,
)

SHAPES10 = [f"s{i}" for i in range(10)]
SMALL = dict(image_size=48, train_images=6, val_images=3, max_objects=3, seed=0, jpeg_quality=95)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_embedded_export_is_ade20k_layout_and_deterministic(tmp_path):
    a, b = ensure_ade20k(tmp_path / "a", **SMALL), ensure_ade20k(tmp_path / "b", **SMALL)
    assert _digest(a) == _digest(b)
    images = sorted((a / "images" / "training").iterdir())
    assert [p.name for p in images][:2] == ["ADE_train_00000001.jpg", "ADE_train_00000002.jpg"]
    assert len(list((a / "annotations" / "validation").glob("ADE_val_*.png"))) == 3
    label = Image.open(a / "annotations" / "training" / "ADE_train_00000001.png")
    assert label.mode == "L" and label.size == (48, 48)
    values = np.unique(np.concatenate([np.asarray(Image.open(p)).ravel() for p in (a / "annotations" / "training").iterdir()]))
    assert values[0] == 0 and values.max() <= 10 and len(values) > 2  # "other" + shape classes 1..10
    assert (a / "classes.txt").read_text().split("\n")[:2] == ["other", "circle"]
    assert ensure_ade20k(tmp_path / "a", **SMALL) == a  # the second call reuses the files


def test_reduce_zero_label_maps_other_to_ignore_and_shifts_classes():
    label = np.array([[0, 1, 2], [150, 255, 7]])
    assert reduce_zero_label(label, 255).tolist() == [[255, 0, 1], [149, 255, 6]]


def _pair(root, split, name, image_size=(20, 30), label_value=1, label_mode="L"):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*image_size, 3), np.uint8)).save(root / "images" / split / f"{name}.jpg")
    label = np.full(image_size, label_value, np.uint8)
    Image.fromarray(label).convert(label_mode).save(root / "annotations" / split / f"{name}.png")


def test_source_reads_pairs_and_explains_bad_input(tmp_path):
    _pair(tmp_path, "training", "a", label_value=3)
    source = ADE20KSource(tmp_path, "training", SHAPES10, True, 255)
    (image, label), index = source.load(0)
    assert image.size == (30, 20) and label.shape == (20, 30) and (label == 2).all() and index == 0

    with pytest.raises(FileNotFoundError, match="data=ade20k_embedded"):
        ADE20KSource(tmp_path / "nowhere", "training", SHAPES10, True, 255)
    with pytest.raises(FileNotFoundError, match="no folder .*validation"):
        ADE20KSource(tmp_path, "validation", SHAPES10, True, 255)
    (tmp_path / "images" / "training" / "orphan.jpg").write_bytes((tmp_path / "images" / "training" / "a.jpg").read_bytes())
    with pytest.raises(FileNotFoundError, match="1 image.*no annotation.*orphan.jpg"):
        ADE20KSource(tmp_path, "training", SHAPES10, True, 255)
    (tmp_path / "images" / "training" / "orphan.jpg").unlink()

    _pair(tmp_path, "validation", "big", label_value=12)
    with pytest.raises(ValueError, match=r"labels in \[11, 11\].*num_classes=10"):
        ADE20KSource(tmp_path, "validation", SHAPES10, True, 255).load(0)
    _pair(tmp_path, "validation", "big", label_value=1, label_mode="RGB")
    with pytest.raises(CorruptImageError, match="mode RGB.*class indices"):
        ADE20KSource(tmp_path, "validation", SHAPES10, True, 255).load(0)
    (tmp_path / "annotations" / "validation" / "big.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CorruptImageError, match="cannot read label map"):
        ADE20KSource(tmp_path, "validation", SHAPES10, True, 255).load(0)


# ------------------------------------------------------------------ transforms
def _sample(h=60, w=90, seed=0):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    label = rng.integers(0, 4, (h, w)).astype(np.int64)
    label[:10] = 255
    return image, label


def test_rescale_size_is_mmcv_keep_ratio():
    assert rescale_size(480, 640, (2048, 512)) == (512, 683)  # short edge bound
    assert rescale_size(100, 1000, (2048, 512)) == (205, 2048)  # long edge bound
    assert rescale_size(96, 96, (384, 96)) == (96, 96)


def test_random_resize_draws_a_ratio_and_keeps_the_aspect():
    torch.manual_seed(0)
    sizes = []
    for _ in range(50):
        image, mask = RandomResize((384, 96), (0.5, 2.0))(tv_tensors.Image(torch.zeros(3, 60, 90, dtype=torch.uint8)), tv_tensors.Mask(torch.zeros(60, 90, dtype=torch.long)))
        assert image.shape[-2:] == mask.shape[-2:]
        sizes.append(image.shape[-2])
        assert abs(image.shape[-1] / image.shape[-2] - 1.5) < 0.05
    assert 48 <= min(sizes) < 60 < 150 < max(sizes) <= 192


def test_train_transform_gives_padded_crops_with_valid_labels_deterministically():
    tf = seg_train_transform(64, (384, 96), (0.5, 2.0), 0.75, 0.5, PhotoMetricDistortion(), 255)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(tf(_sample()))
    (image, label), (image2, label2), (image3, _) = outs
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and label.shape == (64, 64) and label.dtype == torch.long
    assert set(label.unique().tolist()) <= {0, 1, 2, 3, 255}
    assert torch.equal(image, image2) and torch.equal(label, label2) and not torch.equal(image, image3)
    torch.manual_seed(3)  # a small sample: padded bottom/right with 0 (image) and ignore (labels)
    image, label = tf(_sample(20, 24))
    assert (label[-1] == 255).all() and (image[:, -1] == 0).all()


def test_cat_max_crop_avoids_crops_dominated_by_one_class():
    mask = torch.zeros(100, 100, dtype=torch.long)
    mask[:, 60:] = 1  # 60 % class 0, 40 % class 1: about half the 40 px crops are dominated by one class

    def balanced_fraction(cat_max_ratio: float) -> float:
        torch.manual_seed(0)
        crop, balanced = RandomCropCatMax(40, cat_max_ratio, 255), 0
        for _ in range(200):
            _, out = crop(tv_tensors.Image(torch.zeros(3, 100, 100)), tv_tensors.Mask(mask))
            counts = torch.bincount(out.flatten(), minlength=2)
            balanced += int(len(counts[counts > 0]) > 1 and counts.max() / counts.sum() < 0.75)
        return balanced / 200

    assert balanced_fraction(1.0) < 0.6 and balanced_fraction(0.75) > 0.98
    _, whole = RandomCropCatMax(200, 0.75, 255)(tv_tensors.Image(torch.zeros(3, 100, 100)), tv_tensors.Mask(mask))
    assert whole.shape == (100, 100)  # larger than the image: kept whole


def test_photometric_distortion_changes_colours_only():
    image = tv_tensors.Image(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 3, (16, 16)))
    pmd = PhotoMetricDistortion()
    base = {"brightness": None, "contrast": None, "saturation": None, "hue": None, "contrast_first": True}
    assert torch.equal(pmd.transform(mask, {**base, "brightness": 20.0}), mask)
    bright = pmd.transform(image, {**base, "brightness": 20.0})
    assert torch.equal(bright, (image.int() + 20).clamp(max=255).to(torch.uint8))
    contrast = pmd.transform(image, {**base, "contrast": 0.5})
    assert torch.equal(contrast, (image.float() * 0.5).to(torch.uint8))
    same = pmd.transform(image, {**base, "saturation": 1.0, "hue": 0})
    assert (same.int() - image.int()).abs().max() <= 1
    grey = pmd.transform(image, {**base, "saturation": 0.0})
    assert (grey.int().amax(0) - grey.int().amin(0)).max() <= 1  # no saturation: grey
    hue = pmd.transform(image, {**base, "hue": 60})  # a third of the circle: R -> G -> B roughly
    red = tv_tensors.Image(torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1))
    assert pmd.transform(red, {**base, "hue": 60}).flatten().tolist() == [0, 255, 0]
    assert hue.shape == image.shape


def test_eval_transform_resizes_the_image_and_keeps_the_label_map():
    image, label = SegEvalTransform((2048, 48))(_sample(60, 90))
    assert image.shape == (3, 48, 72) and label.shape == (60, 90) and label.dtype == torch.long


def test_datamodule_batches_crops_and_keeps_validation_sizes(tmp_path):
    root = ensure_ade20k(tmp_path / "ade", **SMALL)
    for i, size in enumerate([(40, 52), (48, 48)]):  # extra validation images of other sizes
        _pair(root, "validation", f"ADE_val_9000000{i}", image_size=size, label_value=2)
    dm = SegmentationDataModule(
        source="ade20k", root=str(root), train_split="training", val_split="validation", image_size=32,
        num_classes=10, class_names=None, reduce_zero_label=True, ignore_index=255,
        train_transform=seg_train_transform(32, (192, 48), (0.5, 2.0), 0.75, 0.5, None, 255),
        val_transform=SegEvalTransform((192, 48)), batch_size=4, val_batch_size=5, num_workers=0,
        pin_memory=False, persistent_workers=False, shuffle=True, drop_last=True, seed=0, skip_corrupt=False, embedded=None,
    )
    dm.setup()
    assert dm.num_classes == 10 and dm.class_names[0] == "class_0"
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 3, 32, 32) and batch["labels"].shape == (4, 32, 32)
    assert batch["epoch"] == 0 and batch["batch_index"] == 0 and batch["indices"].shape == (4,)
    val = next(iter(dm.val_dataloader()))
    assert isinstance(val["images"], list) and [tuple(y.shape) for y in val["labels"]] == [(48, 48)] * 3 + [(40, 52), (48, 48)]
    assert dm.sample_name(3) == "ADE_val_90000000"
    assert dm.val_set[SampleKey(3, 0, 0, 0)]["image"][0].shape == (3, 48, 62)  # short side 48


def test_datamodule_rejects_inconsistent_class_names(tmp_path):
    with pytest.raises(ValueError, match="class_names has 2 names but data.num_classes=3"):
        SegmentationDataModule(
            source="ade20k", root=str(tmp_path), train_split="training", val_split=None, image_size=32, num_classes=3,
            class_names=["a", "b"], reduce_zero_label=True, ignore_index=255, train_transform=None, val_transform=None,
            batch_size=1, val_batch_size=1, num_workers=0, pin_memory=False, persistent_workers=False, shuffle=True,
            drop_last=True, seed=0, skip_corrupt=False, embedded=None,
        )


def test_class_hues_colour_each_class_in_its_own_hue():
    """``class_hues``: a solid object of class k is painted at hue k/10 (+-0.02); without, at random hues."""
    import colorsys

    from selfsup.data.embedded.render import SHAPES, render_scene

    def object_hues(class_hues: bool) -> list[tuple[int, float]]:
        out = []
        for n in range(200):
            scene = render_scene(np.random.default_rng([5, n]), 32, 1, class_hues)
            mask, label = scene.masks[0], scene.classes[0]
            if label == 0 and mask.sum() > 20:  # class 0's material is "solid": one colour
                r, g, b = np.median(scene.image[mask], axis=0) / 255
                out.append((label, colorsys.rgb_to_hsv(r, g, b)[0]))
        return out

    hued = object_hues(True)
    assert hued and all(min(h, 1 - h) < 0.03 for _, h in hued)  # class 0 -> hue 0 (+-0.02, jpeg-free)
    assert len(SHAPES) == 10 and max(min(h, 1 - h) for _, h in object_hues(False)) > 0.1
