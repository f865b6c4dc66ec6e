"""The per-iteration warmup + poly schedule of the ADE20K recipes, against the runners' formulas."""

from __future__ import annotations

import pytest

from selfsup.training.poly_schedule import PolySchedule


def mmcv_poly_with_warmup(step: int, base: float, total: int, warmup: int, ratio: float, power: float, min_lr: float) -> float:
    """mmcv 0.x ``PolyLrUpdaterHook.get_lr`` + ``get_warmup_lr`` (warmup='linear'), by iteration."""
    regular = (base - min_lr) * (1 - step / total) ** power + min_lr
    if step >= warmup:
        return regular
    k = (1 - step / warmup) * (1 - ratio)
    return regular * (1 - k)


def mmengine_linear_then_poly(step: int, base: float, total: int, warmup: int, ratio: float, power: float, min_lr: float) -> float:
    """mmengine ``LinearLR(start_factor=ratio, end=warmup)`` then ``PolyLR(eta_min, power, begin=warmup, end=total)``."""
    if step < warmup:
        return base * (ratio + (1 - ratio) * step / warmup)
    return (base - min_lr) * (1 - (step - warmup) / (total - warmup)) ** power + min_lr


@pytest.mark.parametrize("style,reference", [("mmcv", mmcv_poly_with_warmup), ("mmengine", mmengine_linear_then_poly)])
@pytest.mark.parametrize("power,min_lr", [(1.0, 0.0), (0.9, 1e-6)])
def test_schedule_matches_the_reference_runner(style, reference, power, min_lr):
    schedule = PolySchedule(lr=1e-4, warmup_steps=1500, warmup_ratio=1e-6, power=power, min_lr=min_lr, style=style, total_steps=160000)
    for step in (0, 1, 749, 1499, 1500, 1501, 80000, 159999, 160000):
        for scale in (1.0, 0.65**13):
            expected = reference(step, 1e-4 * scale, 160000, 1500, 1e-6, power, min_lr)
            assert schedule.learning_rate(step, scale) == pytest.approx(expected, rel=1e-12, abs=1e-18), (step, scale)


def test_warmup_starts_near_zero_and_peaks_at_the_base_lr():
    for style in ("mmcv", "mmengine"):
        schedule = PolySchedule(lr=1.0, warmup_steps=100, warmup_ratio=1e-6, power=1.0, min_lr=0.0, style=style, total_steps=1000)
        lrs = [schedule.learning_rate(t) for t in range(1000)]
        assert lrs[0] < 1e-5 and max(lrs) == pytest.approx(lrs[100], rel=1e-12) and lrs[100] > 0.89
        assert all(a <= b for a, b in zip(lrs[:100], lrs[1:101])) and all(a >= b for a, b in zip(lrs[100:], lrs[101:]))


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="schedule.style='cosine'; valid: mmcv, mmengine"):
        PolySchedule(lr=1.0, warmup_steps=0, warmup_ratio=0.0, power=1.0, min_lr=0.0, style="cosine")
    with pytest.raises(RuntimeError, match="total_steps is not set"):
        PolySchedule(lr=1.0, warmup_steps=0, warmup_ratio=0.0, power=1.0, min_lr=0.0, style="mmcv").learning_rate(0)
