"""Slow: the README's CPU pretraining recipes, run verbatim, train: the loss falls, and a linear probe on
the target encoder is compared with the same probe on three randomly initialised encoders (README Results).

- ``experiment=ijepa`` (the quick start; objects): not worse than random init, which is all that holds
  there (19.6 % against 17.4-18.1 % on 2,500 val images).
- ``experiment=ijepa_textures`` (the texture variant of the embedded data): a clear margin, the issue's
  criterion (50.1 % against 42.2-44.0 %)."""

from __future__ import annotations

import statistics

import pytest

from tests.helpers import CLEAR_MARGIN, learning_numbers, run_command, summary_of

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


def test_textures_recipe_beats_random_init_by_a_clear_margin(tmp_path):
    proc = run_command("python tools/train.py experiment=ijepa_textures", tmp_path, extra=["run_name=learn"], timeout=3000)
    run_dir = tmp_path / "ijepa_textures" / "learn"
    first, last, trained, random = learning_numbers(run_dir)
    print(f"\n{summary_of(proc.stdout)}\nloss {first:.4f} -> {last:.4f}; linear probe: I-JEPA {trained:.4f}, random init {random}")
    assert last < 0.7 * first
    assert trained > max(random) + CLEAR_MARGIN
