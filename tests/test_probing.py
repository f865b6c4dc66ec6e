"""Probing machinery: LARS, schedules, features, kNN, low-shot subsets, caching, the probe module
(best/last reporting, checkpoints without the backbone, exact resume), the linear grid, timm backbones."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch

from selfsup.data.transforms import eval_transform
from selfsup.models.timm_backbone import timm_vit
from selfsup.models.vit import JEPAViT
from selfsup.probing import features as features_mod
from selfsup.probing.features import FrozenFeatures
from selfsup.probing.knn import knn_classify
from selfsup.probing.lowshot import LowShot
from selfsup.probing.transforms import is_deterministic, probe_train_transform, timm_train_transform
from selfsup.training.checkpoint import CheckpointError, read_checkpoint
from selfsup.training.lars import LARS
from selfsup.training.schedules import JEPASchedule
from selfsup.training.warmup_cosine import WarmupCosineSchedule
from tests.probing_helpers import TINY, make_backbone, make_imagefolder, run_in_process

QUIET = ["logger=none", "trainer.enable_progress_bar=false", "data.num_workers=0", "data.persistent_workers=false"]


# ---------------------------------------------------------------------------------------- optimiser, schedules
@pytest.mark.parametrize("wd", [0.1, 0.0])
def test_lars_is_the_mae_update(wd):
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4))
    opt = LARS([w, b], lr=0.5, weight_decay=wd, momentum=0.9, trust_coefficient=0.001)
    w_ref, b_ref, mu_w, mu_b = w.detach().clone(), b.detach().clone(), torch.zeros(4, 3), torch.zeros(4)
    for _ in range(3):
        gw, gb = torch.randn(4, 3), torch.randn(4)
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        update = gw + wd * w_ref  # weight decay and trust ratio only for ndim > 1
        update = update * (0.001 * w_ref.norm() / update.norm())
        mu_w, mu_b = 0.9 * mu_w + update, 0.9 * mu_b + gb
        w_ref, b_ref = w_ref - 0.5 * mu_w, b_ref - 0.5 * mu_b
        torch.testing.assert_close(w.detach(), w_ref)
        torch.testing.assert_close(b.detach(), b_ref)


def mae_lr(epoch: float, lr: float, warmup: float, epochs: float, min_lr: float = 0.0) -> float:
    """``util/lr_sched.adjust_learning_rate`` of the MAE / efficient-probing code, at a fractional epoch."""
    if epoch < warmup:
        return lr * epoch / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


def test_warmup_cosine_is_the_mae_schedule_with_the_blr_rule():
    s = WarmupCosineSchedule(epochs=90, warmup_epochs=10, base_lr=0.1, steps_per_epoch=7, batch_size=4096)
    assert s.peak_lr == pytest.approx(1.6)
    for step in range(0, 90 * 7, 13):
        assert s.lr(step) == pytest.approx(mae_lr(step / 7, 1.6, 10, 90))
    assert s.lr(0) == 0.0


def test_offset_one_is_the_jepa_scheduler_the_vjepa_probe_uses():
    ours = WarmupCosineSchedule(epochs=20, warmup_epochs=0, base_lr=1e-3, batch_scaled=False, weight_decay=1e-3,
                                final_weight_decay=1e-6, offset=1, steps_per_epoch=11)
    jepa = JEPASchedule(epochs=20, warmup_epochs=0, start_lr=1e-3, ref_lr=1e-3, final_lr=0.0, weight_decay=1e-3,
                        final_weight_decay=1e-6, ema=[1.0, 1.0], steps_per_epoch=11)
    for step in range(0, 220):
        assert ours.lr(step) == pytest.approx(jepa.lr(step + 1), abs=1e-15)
        assert ours.wd(step) == pytest.approx(jepa.wd(step + 1), abs=1e-15)


def test_schedule_writes_scaled_lrs_and_skips_excluded_weight_decay():
    p, q = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p], "lr_scale": 0.01}, {"params": [q], "WD_exclude": True, "weight_decay": 0.0}], lr=0.0)
    s = WarmupCosineSchedule(epochs=1, warmup_epochs=0, base_lr=2.0, batch_scaled=False, weight_decay=0.5, final_weight_decay=0.5, steps_per_epoch=4)
    s.apply(opt, 0)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.02), pytest.approx(2.0)]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]


# ---------------------------------------------------------------------------------------- protocols
# The paper protocols, as the ImageNet experiments must keep them (shared/spec/probing.md sections 6, 10, 11).
PAPER = {
    "probe_ep_in1k": {
        "optim._target_": "selfsup.training.lars.lars", "optim.trust_coefficient": 0.001, "optim.momentum": 0.9, "optim.weight_decay": 0.0,
        "schedule.epochs": 90, "schedule.warmup_epochs": 10, "schedule.base_lr": 0.1, "schedule.batch_scaled": True, "schedule.min_lr": 0.0,
        "data.train_transform.augment": True, "data.train_transform.crop": "mae", "data.train_transform.crop_scale": [0.08, 1.0],
        "data.train_transform.horizontal_flip": True, "data.train_transform.interpolation": "bicubic", "data.drop_last": True,
        "model.features.final_norm": False, "model.heads.norm": "batchnorm", "data.batch_size": 512,
    },
    "probe_vjepa_in1k": {
        "optim._target_": "torch.optim.AdamW", "schedule.epochs": 20, "schedule.warmup_epochs": 0, "schedule.base_lr": 1e-3,
        "schedule.batch_scaled": False, "schedule.weight_decay": 1e-3, "schedule.final_weight_decay": 1e-6, "schedule.offset": 1,
        "model.clip_grad_norm": 1.0, "model.features.final_norm": True, "model.heads.norm": "none", "probe.output_projection": False,
        "data.train_transform.augment": True, "data.train_transform.auto_augment": "original", "data.train_transform.re_prob": 0.25,
        "data.train_transform.re_mode": "pixel", "data.train_transform.crop_scale": [0.08, 1.0], "data.drop_last": False, "data.batch_size": 16,
    },
    "probe_linear_grid_in1k": {
        "optim._target_": "torch.optim.SGD", "optim.momentum": 0.9, "optim.weight_decay": 0.0, "schedule.epochs": 10,
        "schedule.warmup_epochs": 0, "schedule.base_lr": 1.0, "schedule.batch_scaled": True, "data.train_transform.augment": True,
        "data.train_transform.crop": "torchvision", "model.heads.n_last_blocks": [1, 4], "model.features.final_norm": True,
        "model.heads.lrs": [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1], "data.batch_size": 128,
    },
}
# What the CPU experiments change of the paper protocol (and nothing else): the embedded data gives
# ~1000x fewer steps (values measured in the YAML comments).
CPU_SCALE = {
    "probe_ep": {"schedule.base_lr": 10.0, "data.train_transform.augment": False},
    "probe_vjepa": {"schedule.epochs": 100, "data.train_transform.augment": False},
    "probe_linear_grid": {"schedule.epochs": 100, "data.train_transform.augment": False},
}
PROTOCOL_KEYS = ("optim", "schedule", "probe", "model", "data.train_transform", "data.val_transform", "data.drop_last", "data.shuffle")


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}.{key}" if prefix else key).items()}
    return {prefix: node}


def _protocol(experiment: str, tmp_path) -> dict:
    """The protocol keys of an experiment, unresolved (``${backbone.num_heads}`` equals itself at any size)."""
    from omegaconf import OmegaConf

    from tests.test_config import compose

    cfg = compose([f"experiment={experiment}", f"data.root={tmp_path}"], tmp_path)
    return {k: v for k, v in _flat(OmegaConf.to_container(cfg, resolve=False)).items() if k.startswith(PROTOCOL_KEYS)}


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_imagenet_experiments_keep_the_paper_protocol(experiment, tmp_path):
    from omegaconf import OmegaConf

    from tests.test_config import compose

    cfg = _flat(OmegaConf.to_container(compose([f"experiment={experiment}", f"data.root={tmp_path}"], tmp_path), resolve=True))
    assert {key: cfg[key] for key in PAPER[experiment]} == PAPER[experiment]


@pytest.mark.parametrize("experiment", sorted(CPU_SCALE))
def test_cpu_experiments_differ_from_the_paper_protocol_only_in_their_cpu_scale_values(experiment, tmp_path):
    cpu, paper = _protocol(experiment, tmp_path), _protocol(f"{experiment}_in1k", tmp_path)
    assert set(cpu) == set(paper)
    assert {k: v for k, v in cpu.items() if paper[k] != v} == CPU_SCALE[experiment]


# ---------------------------------------------------------------------------------------- features
def test_frozen_features_blocks_norm_and_pooling():
    torch.manual_seed(0)
    vit = JEPAViT(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4)
    images = torch.randn(2, 3, 32, 32)
    last = FrozenFeatures(vit, [-1], final_norm=True)
    torch.testing.assert_close(last(images)["tokens"], vit.forward_tokens(images))
    assert all(not p.requires_grad for p in vit.parameters())
    last.train()
    assert not vit.training  # the backbone stays in eval mode
    two = FrozenFeatures(vit, [0, -1], final_norm=False)(images)["tokens"]
    assert two.shape == (2, 16, 128)
    torch.testing.assert_close(two[..., 64:], vit.blocks(vit._pos_embed(vit.patch_embed(images))))
    pooled = FrozenFeatures(vit, [-2, -1], final_norm=False, output="pooled")(images)
    assert set(pooled) == {"mean"} and pooled["mean"].shape == (2, 2, 64)
    with pytest.raises(ValueError, match="needs a backbone with a class token"):
        FrozenFeatures(vit, [-1], final_norm=False, tokens="all")
    with pytest.raises(ValueError, match="blocks 0..2"):
        FrozenFeatures(vit, [5], final_norm=False)


# ---------------------------------------------------------------------------------------- kNN, low-shot, transforms
def test_knn_is_the_weighted_vote():
    torch.manual_seed(0)
    train_x, test_x = torch.randn(40, 8), torch.randn(9, 8)
    train_y, test_y = torch.randint(0, 6, (40,)), torch.randint(0, 6, (9,))
    top1, top5 = knn_classify(train_x, train_y, test_x, test_y, k=25, temperature=0.07, num_classes=6, chunk=4)
    tr, te = torch.nn.functional.normalize(train_x, dim=1), torch.nn.functional.normalize(test_x, dim=1)
    hits1 = hits5 = 0
    for i in range(9):
        sim = tr @ te[i]
        idx = sim.topk(25).indices
        scores = torch.zeros(6)
        for j in idx:
            scores[train_y[j]] += torch.exp(sim[j] / 0.07)
        order = scores.argsort(descending=True)
        hits1 += int(order[0] == test_y[i])
        hits5 += int(test_y[i] in order[:5])
    assert (top1, top5) == (pytest.approx(100 * hits1 / 9), pytest.approx(100 * hits5 / 9))


def test_lowshot_subsets_are_stratified_seeded_and_fixed(tmp_path):
    samples = [(tmp_path / f"c{c}_{i}.png", c) for c in range(4) for i in range(30)]
    five = LowShot(per_class=5).select(samples)
    assert len(five) == 20 and all(sum(samples[i][1] == c for i in five) == 5 for c in range(4))
    assert five == LowShot(per_class=5).select(samples) != LowShot(per_class=5, seed=1).select(samples)
    assert len(LowShot(fraction=0.1).select(samples)) == 12 and len(LowShot(fraction=0.01).select(samples)) == 4
    assert LowShot().select(samples) == list(range(120))
    (tmp_path / "1percent.txt").write_text("c1_3.png\nc2_7.png\n")
    assert LowShot(file=str(tmp_path / "1percent.txt")).select(samples) == [33, 67]
    with pytest.raises(ValueError, match="at most one"):
        LowShot(fraction=0.1, per_class=2)


def test_probe_transforms_determinism():
    from PIL import Image

    image = Image.new("RGB", (48, 40), (120, 30, 200))
    assert is_deterministic(probe_train_transform(32, augment=False)) and is_deterministic(eval_transform(32))
    assert is_deterministic(timm_train_transform(32, augment=False))
    assert not is_deterministic(probe_train_transform(32)) and not is_deterministic(timm_train_transform(32))
    assert probe_train_transform(32)(image).shape == (3, 32, 32)
    timm_aug = timm_train_transform(32)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(timm_aug(image))
    torch.testing.assert_close(outs[0], outs[1])  # Python's RNG is seeded from the per-sample torch RNG


# ---------------------------------------------------------------------------------------- timm backbones
def test_timm_backbone_loads_local_weights_strictly(tmp_path):
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, img_size=32)
    torch.save({"model": reference.state_dict()}, tmp_path / "w.pth")
    model = timm_vit("vit_tiny_patch16_224", str(tmp_path / "w.pth"), "model", img_size=32)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)
    assert model.cls_token is not None and FrozenFeatures(model, [-1], False, tokens="all").spec(32).num_prefix_tokens == 1
    with pytest.raises(CheckpointError, match="checkpoint_key"):
        timm_vit("vit_tiny_patch16_224", str(tmp_path / "w.pth"), None, img_size=32)
    broken = dict(reference.state_dict())
    broken["extra.weight"] = broken.pop("blocks.0.norm1.weight")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks\.0\.norm1\.weight\n  unexpected keys \(1\): extra\.weight"):
        timm_vit("vit_tiny_patch16_224", str(tmp_path / "broken.pth"), None, img_size=32)


# ---------------------------------------------------------------------------------------- runs (in process)
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_data")
    return make_imagefolder(root / "images"), make_backbone(root / "backbone.safetensors")


def probe_args(tiny, *extra: str) -> list[str]:
    data, backbone = tiny
    return ["data=imagefolder", f"data.root={data}", *TINY, f"backbone.checkpoint={backbone}", "data.batch_size=8", *QUIET, *extra]


def test_ep_probe_reports_best_and_last_epoch_and_saves_heads_only(tiny, tmp_path):
    metrics = run_in_process(["experiment=probe_ep", *probe_args(tiny, "trainer.max_epochs=3", "callbacks.attention_maps.every_n_epochs=2",
                                                              "callbacks.attention_maps.num_images=2", "callbacks.attention_maps.max_queries=4")], tmp_path)
    assert {"val/acc1", "val/acc5", "val/best_acc1", "val/best_acc5", "val/best_epoch"} <= set(metrics)
    results = json.loads((tmp_path / "run" / "probe_results.json").read_text())
    best, last = results["best"]["probe"], results["last"]["probe"]
    assert metrics["val/best_acc1"] == pytest.approx(best["acc1"]) == pytest.approx(max(best["acc1"], last["acc1"]))
    assert metrics["val/acc1"] == pytest.approx(last["acc1"]) and last["epoch"] == 2
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert not any(k.startswith("features.backbone") for k in ckpt["state_dict"])  # the frozen backbone stays out
    assert "heads.probe.0.cls_token" in ckpt["state_dict"] and ckpt["probe"]["backbone_fingerprint"]
    assert sorted(p.name for p in (tmp_path / "run" / "attention_maps").glob("*.png")) == ["epoch001.png", "epoch002.png"]


def test_probe_resume_continues_exactly_and_refuses_other_backbone_weights(tiny, tmp_path):
    common = ["experiment=probe_ep", *probe_args(tiny, "callbacks=probe")]
    run_in_process([*common, "trainer.max_epochs=2"], tmp_path, "straight")
    run_in_process([*common, "trainer.max_epochs=1"], tmp_path, "resumed")
    run_in_process([*common, "trainer.max_epochs=2", f"resume={tmp_path}/resumed/checkpoints/last.ckpt"], tmp_path, "resumed")
    a, b = (read_checkpoint(tmp_path / r / "checkpoints" / "last.ckpt") for r in ("straight", "resumed"))
    assert (a["global_step"], b["global_step"]) == (6, 6)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    other = make_backbone(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(CheckpointError, match="other backbone weights"):
        run_in_process([*common, f"backbone.checkpoint={other}", "trainer.max_epochs=3", f"resume={tmp_path}/resumed/checkpoints/last.ckpt"], tmp_path, "resumed")


def test_features_are_cached_once_when_augmentation_is_off(tiny, tmp_path, monkeypatch):
    seen = []
    forward = features_mod.FrozenFeatures.forward
    monkeypatch.setattr(features_mod.FrozenFeatures, "forward", lambda self, images: seen.append(len(images)) or forward(self, images))
    no_aug = ["data.train_transform.augment=false", "trainer.max_epochs=3", "callbacks=probe"]
    cached = run_in_process(["experiment=probe_ep", *probe_args(tiny, *no_aug)], tmp_path, "cached")
    assert sum(seen) == 24 + 12  # train + val, once, for 3 epochs
    seen.clear()
    direct = run_in_process(["experiment=probe_ep", *probe_args(tiny, *no_aug, "model.cache_features=false")], tmp_path, "direct")
    assert sum(seen) == 3 * (24 + 12)
    assert cached["val/acc1"] == pytest.approx(direct["val/acc1"])
    a, b = (read_checkpoint(tmp_path / r / "checkpoints" / "last.ckpt")["state_dict"] for r in ("cached", "direct"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    with pytest.raises(ValueError, match="the training transform is random"):
        run_in_process(["experiment=probe_ep", *probe_args(tiny, "data.train_transform.augment=true", "model.cache_features=true")], tmp_path, "bad")


def test_linear_grid_trains_all_heads_on_one_cached_pass(tiny, tmp_path, monkeypatch):
    seen = []
    forward = features_mod.FrozenFeatures.forward
    monkeypatch.setattr(features_mod.FrozenFeatures, "forward", lambda self, images: seen.append(len(images)) or forward(self, images))
    metrics = run_in_process(["experiment=probe_linear_grid", *probe_args(tiny, "data.train_transform.augment=false", "trainer.max_epochs=2", "model.features.blocks=[-2,-1]", "model.heads.n_last_blocks=[1,2]")], tmp_path)
    assert sum(seen) == 24 + 12
    results = json.loads((tmp_path / "run" / "probe_results.json").read_text())
    assert len(results["last"]) == 26  # 13 lrs x {1, 2} blocks; no avgpool variants without a class token
    best = max(results["last"], key=lambda n: results["last"][n]["acc1"])
    assert metrics["val/acc1"] == pytest.approx(results["last"][best]["acc1"])
    rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text() if (tmp_path / "run" / "csv").exists() else ""
    assert rows == ""  # logger=none here; the grid goes to probe_results.json


def test_vjepa_protocol_and_knn_run(tiny, tmp_path):
    metrics = run_in_process(["experiment=probe_vjepa", *probe_args(tiny, "trainer.max_epochs=1")], tmp_path, "vjepa")
    assert metrics["train/wd"] == pytest.approx(1e-3, rel=0.1) and "val/best_acc1" in metrics
    knn = run_in_process(["experiment=probe_knn", *probe_args(tiny, "model.ks=[1,5]")], tmp_path, "knn")
    assert {"val/knn_k1_acc1", "val/knn_k5_acc1", "val/knn_k5_acc5"} <= set(knn)


def test_lowshot_and_layerwise_options_reach_the_run(tiny, tmp_path):
    metrics = run_in_process(["experiment=probe_ep", *probe_args(tiny, "data.lowshot.per_class=2", "data.batch_size=6", "model.features.blocks=[0]", "trainer.max_epochs=1", "callbacks=probe")], tmp_path)
    assert metrics["val/acc1"] >= 0
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 1 and ckpt["config"]["model"]["features"]["blocks"] == [0]  # 6 images: one batch
