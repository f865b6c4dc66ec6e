"""The I-JEPA loss against an independent computation of spec a.5, the schedules against spec a.6,
the parameter groups and the EMA update against the official rules."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.masks.multiblock import MultiBlockMaskSampler
from selfsup.models.ema import ema_update_
from selfsup.models.predictor import JEPAPredictor
from selfsup.models.vit import JEPAViT
from selfsup.objectives.ijepa import IJEPA
from selfsup.training.optim import jepa_param_groups
from selfsup.training.schedules import JEPASchedule
from selfsup.utils.seeding import seeded_generator
from selfsup.reference.ijepa import RefPredictor, RefViT, RefCosineWD, RefWarmupCosine, ref_ijepa_loss, ref_momentum


def _objective(img=32, patch=8, dim=48, depth=2, heads=3, pdim=24, pdepth=2, loss="smooth_l1"):
    torch.manual_seed(0)
    enc = JEPAViT(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads)
    pred = JEPAPredictor(embed_dim=dim, predictor_embed_dim=pdim, depth=pdepth, num_heads=heads, img_size=img, patch_size=patch)
    obj = IJEPA(enc, pred, loss=loss)
    with torch.no_grad():  # make the target differ from the encoder, as after training
        for p in obj.target_encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return obj


@pytest.mark.parametrize("img,patch,nenc,npred", [(48, 8, 1, 4), (64, 8, 1, 2), (48, 8, 2, 3)])
def test_loss_equals_independent_spec_computation(img, patch, nenc, npred):
    obj = _objective(img=img, patch=patch)
    grid = img // patch
    sampler = MultiBlockMaskSampler(
        mode="official", input_size=img, patch_size=patch, nenc=nenc, npred=npred, min_keep=2,
        pred_mask_scale=(0.15, 0.2), enc_mask_scale=(0.6, 0.8),
    )
    masks_enc, masks_pred = sampler(3, seeded_generator(5))
    x = torch.randn(3, 3, img, img)
    ours = obj(x, masks_enc, masks_pred)

    enc, tgt = RefViT(img, patch, 48, 2, 3), RefViT(img, patch, 48, 2, 3)
    pred = RefPredictor(grid, 48, 24, 2, 3)
    enc.load_state_dict(obj.encoder.state_dict())
    tgt.load_state_dict(obj.target_encoder.state_dict())
    pred.load_state_dict(obj.predictor.state_dict())
    ref = ref_ijepa_loss(enc, tgt, pred, x, masks_enc, masks_pred)
    torch.testing.assert_close(ours.loss, ref, atol=1e-6, rtol=1e-5)
    assert ours.prediction.shape == (npred * nenc * 3, masks_pred[0].shape[1], 48)


def test_mse_option_and_gradients_only_reach_encoder_and_predictor():
    obj = _objective(img=48, loss="mse")
    sampler = MultiBlockMaskSampler(mode="corrected", input_size=48, patch_size=8, min_keep=2, enc_mask_scale=(0.6, 0.8))
    me, mp = sampler(2, seeded_generator(0))
    out = obj(torch.randn(2, 3, 48, 48), me, mp)
    torch.testing.assert_close(out.loss, ((out.prediction - out.target) ** 2).mean())
    out.loss.backward()
    assert all(p.grad is None for p in obj.target_encoder.parameters())
    assert obj.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert obj.predictor.mask_token.grad is not None


def test_param_groups_follow_the_official_rules():
    obj = _objective()
    groups = jepa_param_groups(obj.optimized_modules())
    assert [g["name"] for g in groups] == ["encoder", "predictor", "encoder_no_decay", "predictor_no_decay"]
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert not by_id[id(obj.predictor.mask_token)]["WD_exclude"]  # 3-D mask token IS decayed
    assert by_id[id(obj.encoder.norm.weight)]["WD_exclude"]  # LayerNorm weights are not
    assert by_id[id(obj.encoder.blocks[0].attn.qkv.bias)]["WD_exclude"]
    assert not by_id[id(obj.encoder.patch_embed.proj.weight)]["WD_exclude"]
    assert id(obj.encoder.pos_embed) not in by_id  # frozen, never has a gradient
    assert all(g["weight_decay"] == 0.0 for g in groups if g["WD_exclude"])


def test_ema_update_is_the_official_rule_over_all_parameters():
    obj = _objective()
    before = {k: v.clone() for k, v in obj.target_encoder.state_dict().items()}
    online = obj.encoder.state_dict()
    ema_update_(obj.target_encoder, obj.encoder, 0.9)
    for k, v in obj.target_encoder.state_dict().items():
        torch.testing.assert_close(v, before[k] * 0.9 + 0.1 * online[k], atol=1e-7, rtol=1e-6)


# ------------------------------------------------------------------ schedules (spec a.6)
VITH = JEPASchedule(epochs=300, warmup_epochs=40, start_lr=2e-4, ref_lr=1e-3, final_lr=1e-6, weight_decay=0.04,
                    final_weight_decay=0.4, ema=(0.996, 1.0), ipe_scale=1.0, steps_per_epoch=625)


@pytest.mark.parametrize(
    "step,lr,wd",
    [(1, 2e-4, 0.04), (25_000, 1e-3, 0.056), (93_750, 6.2e-4, 0.22), (187_500, 1e-6, 0.40)],
)
def test_schedule_reproduces_the_spec_table(step, lr, wd):
    assert math.isclose(VITH.lr(step), lr, rel_tol=0.01, abs_tol=1e-9)
    assert math.isclose(VITH.wd(step), wd, rel_tol=0.01)


def test_schedule_equals_the_stateful_official_schedulers_at_every_step():
    sched = JEPASchedule(epochs=5, warmup_epochs=1.5, start_lr=1e-4, ref_lr=1e-3, final_lr=1e-6, weight_decay=0.04,
                         final_weight_decay=0.4, ema=(0.996, 1.0), ipe_scale=1.0, steps_per_epoch=37)
    total = int(5 * 37)
    lr_ref = RefWarmupCosine(int(1.5 * 37), 1e-4, 1e-3, total, 1e-6)
    wd_ref = RefCosineWD(0.04, total, 0.4)
    mom_ref = ref_momentum((0.996, 1.0), 37, 5)
    for k in range(total):  # optimiser step k uses lr(k+1), wd(k+1) and momentum(k)
        assert sched.lr(k + 1) == lr_ref.step()
        assert sched.wd(k + 1) == wd_ref.step()
        assert sched.momentum(k) == next(mom_ref)
    assert sched.momentum(total) == 1.0 and sched.momentum(0) == 0.996
