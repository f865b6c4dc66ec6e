"""Slow DMT-JEPA checks: the CPU recipes learn (loss, linear and EP probes against random init; a clear
linear-probe margin on the texture variant, and an attentive-probe margin with its 3x longer recipe),
and a paper recipe runs end to end (ImageNet layout, 224 px, official sampler, bf16 autocast) on a tiny
stand-in."""

from __future__ import annotations

import statistics

import pytest

from selfsup.data.embedded import ensure_imagefolder
from selfsup.training.checkpoint import read_checkpoint
from tests.helpers import (
    CLEAR_MARGIN,
    EP_CLEAR_MARGIN,
    PROBE_VAL_PER_CLASS,
    ep_probe_accuracy,
    first_and_last_loss,
    learning_numbers,
    run_command,
    run_train,
    summary_of,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_dmt_jepa_cpu_recipe_lowers_the_loss_and_its_probes_are_compared_to_random_init(tmp_path):
    proc = run_train(["experiment=dmt_jepa", "run_name=learn"], tmp_path, timeout=3000)
    run_dir = tmp_path / "dmt_jepa" / "learn"
    first, last, trained, random = learning_numbers(run_dir)
    ep_trained = ep_probe_accuracy(tmp_path, run_dir / "checkpoints" / "last.ckpt", "ep_dmt")
    ep_random = ep_probe_accuracy(tmp_path, None, "ep_random")
    print(f"\n{summary_of(proc.stdout)}\nloss {first:.4f} -> {last:.4f}; linear probe: DMT-JEPA {trained:.4f}, "
          f"random init {random}; EP probe: DMT-JEPA {ep_trained:.1f} %, random init {ep_random:.1f} %")
    assert last < 0.7 * first
    # Measured 2026-11-27 (README Results; 2,500 val images): 18.4 % vs 17.4-18.1 % for three random
    # inits. The "clear margin" is not reached at CPU scale; asserted: not worse than random.
    assert trained > statistics.mean(random) - 0.015
    # The attentive probe: 64.8 % vs 68.2 % at random init (500 val images): on this dataset a random
    # ViT's tokens already carry the class and 589 CPU steps do not improve on them, so no margin is
    # asserted, only that the probe reads both far above chance (10 %).
    assert ep_trained > 40 and ep_random > 40


def test_paper_recipe_runs_end_to_end_on_a_tiny_imagenet_layout(tmp_path):
    root = ensure_imagefolder(tmp_path / "imagenet", image_size=96, train_per_class=2, val_per_class=1, num_classes=4)
    run_train(
        ["experiment=dmt_jepa_vitb16_in1k", f"data.root={root}", "trainer.accelerator=cpu", "debug=fast",
         "trainer.limit_train_batches=2", "data.batch_size=2", "data.val_batch_size=2", "backbone.depth=2",
         "predictor.depth=1", "run_name=b16"],
        tmp_path,
    )
    ckpt = read_checkpoint(tmp_path / "dmt_jepa_vitb16_in1k" / "b16" / "checkpoints" / "last.ckpt")
    cfg = ckpt["config"]
    assert ckpt["global_step"] == 2 and cfg["trainer"]["precision"] == "bf16-mixed" and cfg["mask"]["mode"] == "official"
    assert ckpt["state_dict"]["objective.target_head.cls_blocks.0.attn.q.weight"].shape == (768, 768)


def test_dmt_jepa_textures_recipe_beats_random_init_by_a_clear_margin(tmp_path):
    proc = run_command("python tools/train.py experiment=dmt_jepa_textures", tmp_path, extra=["run_name=learn"], timeout=3000)
    run_dir = tmp_path / "dmt_jepa_textures" / "learn"
    first, last, trained, random = learning_numbers(run_dir)
    textures = ["data.embedded.kind=textures"]
    ep_trained = ep_probe_accuracy(tmp_path, run_dir / "checkpoints" / "last.ckpt", "ep_dmt", textures)
    ep_random = ep_probe_accuracy(tmp_path, None, "ep_random", textures)
    print(f"\n{summary_of(proc.stdout)}\nloss {first:.4f} -> {last:.4f}; linear probe: DMT-JEPA {trained:.4f}, "
          f"random init {random}; EP probe: DMT-JEPA {ep_trained:.1f} %, random init {ep_random:.1f} %")
    assert last < 0.7 * first
    # Measured 2026-11-28 (README Results; 2,500 val images): 49.2 % vs 42.2-44.0 % for three random
    # inits: the clear margin, asserted over the best of them.
    assert trained > max(random) + CLEAR_MARGIN
    # The attentive probe: 84.0 % vs 82.4 % at random init (500 val images). A random ViT's tokens
    # already tell the patterns apart; asserted: not worse than random init by more than 3 points.
    assert ep_trained > ep_random - 3


def test_dmt_jepa_textures_long_recipe_beats_random_init_under_the_attentive_probe(tmp_path):
    proc = run_command("python tools/train.py experiment=dmt_jepa_textures_long", tmp_path, extra=["run_name=learn"], timeout=3000)
    first, last = first_and_last_loss(tmp_path / "dmt_jepa_textures_long" / "learn")
    ckpt = tmp_path / "dmt_jepa_textures_long" / "learn" / "checkpoints" / "last.ckpt"
    data = ["data.embedded.kind=textures", f"data.embedded.val_per_class={PROBE_VAL_PER_CLASS}"]
    ep_trained = ep_probe_accuracy(tmp_path, ckpt, "ep_dmt", data)
    ep_random = [ep_probe_accuracy(tmp_path, None, f"ep_random{seed}", [*data, f"seed={seed}"]) for seed in range(3)]
    print(f"\n{summary_of(proc.stdout)}\nloss {first:.4f} -> {last:.4f}; EP probe (2,500 val): "
          f"DMT-JEPA {ep_trained:.2f} %, random init {ep_random}")
    assert last < 0.7 * first
    # Measured 2026-11-28 (README Results): 85.0 % vs 81.3 / 81.6 / 78.6 % for three random inits.
    assert ep_trained > max(ep_random) + EP_CLEAR_MARGIN
