"""The ViTDet learning-rate schedule (detectron2 WarmupParamScheduler over MultiStepParamScheduler)."""

from __future__ import annotations

import pytest

from selfsup.training.step_schedule import WarmupMultiStepSchedule


def vitdet_schedule() -> WarmupMultiStepSchedule:
    # mask_rcnn_vitdet_b_100ep.py: 184375 iterations, milestones 163889 / 177546, warmup 250 from 0.001
    return WarmupMultiStepSchedule(epochs=1, base_lr=1e-4, warmup_steps=250, warmup_factor=0.001,
                                   milestones=[0.8888908, 0.9629614], values=[1.0, 0.1, 0.01], steps_per_epoch=184375)


def detectron2_multiplier(step: int) -> float:
    """fvcore's schedulers as detectron2's LRMultiplier evaluates them at ``step / max_iter``."""
    main = 1.0 if step < 163889 else 0.1 if step < 177546 else 0.01
    if step < 250:  # LinearParamScheduler(0.001 * 1.0, value at the warmup end) over the rescaled warmup interval
        return 0.001 + (1.0 - 0.001) * step / 250
    return main


@pytest.mark.parametrize("step", [0, 1, 125, 249, 250, 1000, 163888, 163889, 170000, 177545, 177546, 184374])
def test_matches_detectron2_vitdet_schedule(step):
    assert vitdet_schedule().multiplier(step) == pytest.approx(detectron2_multiplier(step), rel=1e-12)
    assert vitdet_schedule().lr(step) == pytest.approx(1e-4 * detectron2_multiplier(step), rel=1e-12)


def test_milestones_scale_with_the_run_and_are_checked():
    short = WarmupMultiStepSchedule(epochs=2, base_lr=1.0, warmup_steps=0, warmup_factor=0.001,
                                    milestones=[0.5, 0.75], values=[1.0, 0.1, 0.01], steps_per_epoch=50)
    assert [short.lr(s) for s in (0, 49, 50, 74, 75, 99)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    with pytest.raises(ValueError, match="one more entry"):
        WarmupMultiStepSchedule(1, 1.0, 0, 0.1, [0.5], [1.0])
    with pytest.raises(ValueError, match="increasing fractions"):
        WarmupMultiStepSchedule(1, 1.0, 0, 0.1, [0.9, 0.5], [1.0, 0.1, 0.01])
    with pytest.raises(RuntimeError, match="steps_per_epoch is not set"):
        WarmupMultiStepSchedule(1, 1.0, 0, 0.1, [0.5], [1.0, 0.1]).lr(3)
