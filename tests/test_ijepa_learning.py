"""Slow: the README quick start, run verbatim, trains: the loss falls, and a linear probe on its target
encoder is compared with the same probe on randomly initialised encoders (README Results).

What is asserted about the probe is what holds on this machine: the pretrained encoder is not worse
than random init. The margin the foundation issue asks for ("a clear margin") is **not** reached by the
CPU recipe: measured on 2,500 val images, 19.6 % against 17.4-18.1 % for three random inits."""

from __future__ import annotations

import statistics

import pytest

from tests.helpers import learning_numbers, run_command, summary_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

# absolute top-1 (10 classes, 2,500 val images): the standard error of a difference is ~1.1 points
NOT_WORSE_THAN_RANDOM_BY = 0.015


def test_quickstart_pretraining_lowers_the_loss_and_is_compared_with_random_init(tmp_path):
    proc = run_command("python tools/train.py experiment=ijepa", tmp_path, extra=["run_name=learn"], timeout=3000)
    summary = summary_of(proc.stdout)
    run_dir = tmp_path / "ijepa" / "learn"
    assert "checkpoint:" in summary and (run_dir / "checkpoints" / "last.target_encoder.safetensors").exists()
    first, last, trained, random = learning_numbers(run_dir)
    print(f"\n{summary}\nloss {first:.4f} -> {last:.4f}; linear probe: I-JEPA {trained:.4f}, random init {random}")
    assert last < 0.7 * first
    assert trained > statistics.mean(random) - NOT_WORSE_THAN_RANDOM_BY


# the textures recipe: measured 2026-11-28 (README Results); asserted with room for run-to-run noise
CLEAR_MARGIN = 0.04


def test_textures_recipe_beats_random_init_by_a_clear_margin(tmp_path):
    proc = run_command("python tools/train.py experiment=ijepa_textures", tmp_path, extra=["run_name=learn"], timeout=3000)
    run_dir = tmp_path / "ijepa_textures" / "learn"
    first, last, trained, random = learning_numbers(run_dir)
    print(f"\n{summary_of(proc.stdout)}\nloss {first:.4f} -> {last:.4f}; linear probe: I-JEPA {trained:.4f}, random init {random}")
    assert last < 0.7 * first
    assert trained > max(random) + CLEAR_MARGIN
