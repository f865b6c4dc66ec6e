"""Data: image modes, bad inputs, deterministic distributed/resumable sampling, worker independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from selfsup.data.collate import BatchCollator
from selfsup.data.datamodule import ImageDataModule
from selfsup.data.images import BACKGROUND_RGB, CorruptImageError, ImageFolderDataset, load_rgb
from selfsup.data.keyed import KeyedDataset
from selfsup.data.sampling import ResumableBatchSampler
from selfsup.data.transforms import eval_transform, jepa_pretrain_transform
from selfsup.masks.multiblock import MultiBlockMaskSampler


def _folder(tmp_path, classes=("a", "b"), per_class=6, size=40):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return tmp_path


def _datamodule(root, **overrides):
    kwargs = dict(
        source="imagefolder", root=str(root), train_split="train", val_split="val", image_size=48,
        train_transform=jepa_pretrain_transform(48), val_transform=eval_transform(48),
        mask_sampler=MultiBlockMaskSampler(input_size=48, patch_size=8, min_keep=2, enc_mask_scale=(0.6, 0.8)),
        batch_size=4, val_batch_size=4, num_workers=0, pin_memory=False, persistent_workers=False,
        shuffle=True, drop_last=True, seed=0, skip_corrupt=False, embedded=None,
    )
    kwargs.update(overrides)
    return ImageDataModule(**kwargs)


# ------------------------------------------------------------------ image modes
def test_grayscale_16bit_float_and_rgba_become_sensible_rgb(tmp_path):
    gray16 = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    rgb = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 100 < rgb[4, 0, 0] < 160  # rescaled, not clipped

    Image.fromarray(np.full((8, 8), 77, np.uint8), "L").save(tmp_path / "g8.png")
    assert (np.asarray(load_rgb(tmp_path / "g8.png")) == 77).all()

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:4, :, 3] = 255  # top half opaque red, bottom transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_rgb(tmp_path / "a.png"))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[7, 7]) == BACKGROUND_RGB

    Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(tmp_path / "f.tiff")
    assert abs(int(np.asarray(load_rgb(tmp_path / "f.tiff"))[0, 0, 0]) - 128) <= 1


def test_truncated_and_garbage_files_raise_naming_the_file(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    for name in ("trunc.jpg", "junk.png"):
        with pytest.raises(CorruptImageError, match=f"{name}.*data.skip_corrupt=true"):
            load_rgb(tmp_path / name)


def test_skip_corrupt_replaces_and_counts(tmp_path):
    root = _folder(tmp_path)
    (root / "train" / "a" / "0.png").write_bytes(b"broken")
    strict = _datamodule(root)
    strict.setup()
    key = next(iter(ResumableBatchSampler(len(strict.train_set), 12, shuffle=False)))[0]
    with pytest.raises(CorruptImageError):
        strict.train_set[key]
    lenient = _datamodule(root, skip_corrupt=True)
    lenient.setup()
    sample = lenient.train_set[key]
    assert sample["corrupt"] == 1 and sample["image"].shape == (3, 48, 48)


def test_missing_empty_and_wrong_layout_roots_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*data=embedded"):
        ImageFolderDataset(tmp_path / "nope", "train")
    (tmp_path / "empty" / "train" / "cls").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", "train")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no 'train' folder .*found: \['images'\]"):
        ImageFolderDataset(tmp_path / "flat", "train")


def test_images_smaller_than_the_crop_are_resized(tmp_path):
    root = _folder(tmp_path, size=8)
    dm = _datamodule(root, batch_size=12)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (12, 3, 48, 48)


# ------------------------------------------------------------------ sampling
@pytest.mark.parametrize("world", [1, 2, 3])
def test_order_equals_torch_distributed_sampler(world):
    n = 53
    for rank in range(world):
        ours = ResumableBatchSampler(n, 1, shuffle=True, drop_last=False, seed=7, rank=rank, world_size=world)
        ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=7)
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            ref.set_epoch(epoch)
            assert [k[0].index for k in ours] == list(ref)


def test_resume_mid_epoch_continues_with_the_same_batches():
    full = ResumableBatchSampler(40, 4, seed=1)
    full.set_epoch(2)
    batches = list(full)
    resumed = ResumableBatchSampler(40, 4, seed=1)
    resumed.resume_at(2, 6)
    resumed.set_epoch(2)
    assert list(resumed) == batches[6:] and len(resumed) == len(full)
    resumed.set_epoch(3)
    assert len(list(resumed)) == 10  # the offset applies to the resumed epoch only


def test_batches_identical_for_any_worker_count(tmp_path):
    root = _folder(tmp_path, per_class=8)
    out = []
    for workers in (0, 2):
        dm = _datamodule(root, num_workers=workers, persistent_workers=False)
        dm.setup()
        out.append(list(dm.train_dataloader()))
    for a, b in zip(*out):
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
        assert all(torch.equal(x, y) for x, y in zip(a["masks_enc"] + a["masks_pred"], b["masks_enc"] + b["masks_pred"]))


def test_collator_output_is_the_official_mask_format(tmp_path):
    root = _folder(tmp_path)
    dm = _datamodule(root)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 3, 48, 48) and batch["labels"].dtype == torch.long
    assert len(batch["masks_enc"]) == 1 and len(batch["masks_pred"]) == 4
    assert all(m.dtype == torch.long and m.shape[0] == 4 for m in batch["masks_enc"] + batch["masks_pred"])
    assert isinstance(dm.train_dataloader().collate_fn, BatchCollator)


def test_batch_larger_than_the_data_is_explained():
    with pytest.raises(ValueError, match="data.batch_size=64 is larger than the 10 samples"):
        ResumableBatchSampler(20, 64, world_size=2)


def test_keyed_dataset_augmentation_depends_only_on_seed_epoch_index(tmp_path):
    root = _folder(tmp_path)
    ds = KeyedDataset(ImageFolderDataset(root, "train"), jepa_pretrain_transform(32), seed=3, skip_corrupt=False)
    from selfsup.data.sampling import SampleKey

    torch.manual_seed(123)
    a = ds[SampleKey(2, 1, 0, 0)]["image"]
    torch.manual_seed(999)
    b = ds[SampleKey(2, 1, 5, 1)]["image"]  # other batch, other rank: same sample, same epoch
    c = ds[SampleKey(2, 2, 0, 0)]["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_embedded_settings_get_their_own_folder_and_never_clobber_another_runs_data(tmp_path):
    """Default generator settings live in ``root``; other settings in ``root-<hash>``, decided without
    looking at the disk, so a second run with other settings leaves the first run's files alone."""
    small = {"train_per_class": 3, "val_per_class": 2, "num_classes": 2}
    first = _datamodule(tmp_path / "embedded", source="embedded", embedded=small)
    default = _datamodule(tmp_path / "embedded", source="embedded", embedded={"train_per_class": 200})
    other = _datamodule(tmp_path / "embedded", source="embedded", embedded={**small, "train_per_class": 4})
    assert default.root == tmp_path / "embedded"
    assert first.root.parent == tmp_path and first.root.name.startswith("embedded-") and other.root != first.root
    first.prepare_data()
    files = sorted(first.root.rglob("*.png"))
    other.prepare_data()
    assert sorted(first.root.rglob("*.png")) == files and len(files) == 2 * (3 + 2)
    assert len(list(other.root.rglob("*.png"))) == 2 * (4 + 2)
    with pytest.raises(ValueError, match=r"unknown data.embedded key\(s\) \['per_class'\]; valid: image_size, train_per_class"):
        _datamodule(tmp_path / "embedded", source="embedded", embedded={"per_class": 3})
