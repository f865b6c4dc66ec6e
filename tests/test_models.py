"""Backbone, position embedding, predictor: exact layout, shapes, and official-checkpoint loading."""

from __future__ import annotations

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from selfsup.models.pos_embed import sincos_2d
from selfsup.models.predictor import JEPAPredictor
from selfsup.models.vit import VIT_SIZES, JEPAViT, vit
from selfsup.training.checkpoint import CheckpointError, load_strict, read_official_ijepa
from selfsup.reference.ijepa import spec_sincos
from tests.helpers import make_official_checkpoint


@pytest.mark.parametrize("dim,grid", [(192, 14), (384, 16), (64, 4), (1280, 16)])
def test_sincos_equals_spec_formula_element_for_element(dim, grid):
    ours = sincos_2d(dim, (grid, grid))
    ref = torch.from_numpy(spec_sincos(dim, grid)).float()
    assert torch.equal(ours, ref)


def test_sincos_order_first_half_is_column():
    emb = sincos_2d(8, (3, 3))
    # token (row 0, col 1) and (row 1, col 0): the first half must differ only for the column change
    assert not torch.allclose(emb[1, :4], emb[0, :4]) and torch.allclose(emb[1, 4:], emb[0, 4:])
    assert torch.allclose(emb[3, :4], emb[0, :4]) and not torch.allclose(emb[3, 4:], emb[0, 4:])


def test_sincos_interpolation_matches_bicubic_resampling_of_the_table():
    base = sincos_2d(64, (14, 14))[None]
    exact = sincos_2d(64, (28, 28), base_grid=(14, 14))[None]
    resampled = resample_abs_pos_embed(base, new_size=(28, 28), old_size=(14, 14), num_prefix_tokens=0)
    # the low-frequency channels (slowly varying, well sampled by the table) agree closely
    low = [c for c in range(64) if c % 16 >= 12]  # highest index within each sin/cos block = lowest frequency
    assert torch.allclose(exact[..., low], resampled[..., low], atol=2e-3)
    assert torch.equal(sincos_2d(64, (14, 14), base_grid=(14, 14)), base[0])


@pytest.mark.parametrize(
    "img,patch,size",
    [(64, 8, "tiny"), (96, 16, "tiny"), (224, 16, "tiny"), ((64, 96), 16, "tiny"), (112, 14, "small")],
)
def test_vit_shapes_full_and_masked(img, patch, size):
    model = vit(size, img_size=img, patch_size=patch)
    h, w = (img, img) if isinstance(img, int) else img
    x = torch.randn(2, 3, h, w)
    n = (h // patch) * (w // patch)
    tokens = model.forward_tokens(x)
    assert tokens.shape == (2, n, VIT_SIZES[size][0])
    masks = [torch.stack([torch.arange(0, n, 2), torch.arange(1, n, 2)])]
    assert model.forward_tokens(x, masks).shape == (2, n // 2, VIT_SIZES[size][0])
    assert model(x).shape == (2, VIT_SIZES[size][0])  # timm forward: average-pooled


def test_vit_other_resolution_uses_interpolated_sincos():
    model = JEPAViT(img_size=64, patch_size=16, embed_dim=64, depth=1, num_heads=2)
    out = model.forward_tokens(torch.randn(1, 3, 128, 96))
    assert out.shape == (1, 8 * 6, 64)
    assert torch.equal(model.pos_embed_for((8, 6))[0], sincos_2d(64, (8, 6), base_grid=(4, 4)))


def test_vit_rejects_sizes_not_divisible_by_patch():
    with pytest.raises(ValueError, match="not a multiple of backbone.patch_size"):
        JEPAViT(img_size=100, patch_size=16, embed_dim=64, depth=1, num_heads=2)
    model = JEPAViT(img_size=64, patch_size=16, embed_dim=64, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        model.forward_tokens(torch.randn(1, 3, 70, 64))


def test_vit_uses_fused_attention_and_frozen_pos_embed():
    model = vit("tiny", img_size=32, patch_size=16)
    assert all(blk.attn.fused_attn for blk in model.blocks)
    assert not model.pos_embed.requires_grad
    assert model.cls_token is None and model.global_pool == "avg"


def test_official_init_statistics():
    torch.manual_seed(0)
    model = vit("base", img_size=32, patch_size=16)
    w = model.blocks[11].attn.proj.weight
    assert abs(w.std().item() - 0.02) < 1e-3  # the official effective init: no depth rescale
    assert torch.all(model.blocks[0].attn.qkv.bias == 0) and torch.all(model.norm.weight == 1)
    rescaled = vit("base", img_size=32, patch_size=16, depth_rescale_init=True)
    assert abs(rescaled.blocks[11].attn.proj.weight.std().item() - 0.02 / (24**0.5)) < 3e-4


@pytest.mark.parametrize(("init", "std"), [("official", 0.02), ("lecun", 1 / 48**0.5), ("torch", 1 / 48**0.5 / 3**0.5)])
def test_patch_embed_init_switch(init, std):
    """backbone.patch_embed_init: the std of the fresh patch projection (fan-in 3*4*4 = 48), and what it
    does to a fresh token: official patch tokens sit far below the sin-cos table (RMS 0.71)."""
    torch.manual_seed(0)
    model = JEPAViT(img_size=32, patch_size=4, embed_dim=192, depth=1, num_heads=3, patch_embed_init=init)
    weight = model.patch_embed.proj.weight
    assert abs(weight.std().item() - std) < 0.1 * std, (init, weight.std().item())
    tokens = model.patch_embed(torch.randn(2, 3, 32, 32))
    table = model.pos_embed.pow(2).mean().sqrt().item()
    ratio = tokens.pow(2).mean().sqrt().item() / table
    assert (ratio < 0.3) if init == "official" else (ratio > 0.6), (init, ratio)
    assert torch.all(model.patch_embed.proj.bias == 0) or init == "torch"
    with pytest.raises(ValueError, match="patch_embed_init='xavier'; valid: official, lecun, torch"):
        JEPAViT(img_size=32, patch_size=4, embed_dim=192, depth=1, num_heads=3, patch_embed_init="xavier")


def test_official_checkpoint_loads_strictly_and_gives_the_same_features(tmp_path):
    path, ref_enc, ref_tgt, ref_pred = make_official_checkpoint(tmp_path)
    states = read_official_ijepa(path)
    ours = JEPAViT(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)
    load_strict(ours, states["target_encoder"], "target_encoder")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours.forward_tokens(x), ref_tgt(x), atol=1e-5, rtol=1e-5)
    masks = [torch.tensor([[0, 3, 5, 9], [1, 2, 7, 15]])]
    load_strict(ours, states["encoder"], "encoder")
    torch.testing.assert_close(ours.forward_tokens(x, masks), ref_enc(x, masks), atol=1e-5, rtol=1e-5)

    pred = JEPAPredictor(embed_dim=48, predictor_embed_dim=24, depth=2, num_heads=3, img_size=32, patch_size=8)
    load_strict(pred, states["predictor"], "predictor")
    z = ours.forward_tokens(x, masks)
    targets = [torch.tensor([[4, 6], [8, 11]]), torch.tensor([[12, 13], [14, 0]])]
    torch.testing.assert_close(pred(z, masks, targets), ref_pred(z, masks, targets), atol=1e-5, rtol=1e-5)


def test_mismatched_checkpoint_lists_the_keys(tmp_path):
    path, *_ = make_official_checkpoint(tmp_path)
    states = read_official_ijepa(path)
    wrong = JEPAViT(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3)
    with pytest.raises(CheckpointError, match=r"missing keys \(12\): blocks\.2\.") as err:
        load_strict(wrong, states["encoder"], "encoder")
    assert "check the backbone size" in str(err.value)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_strict(JEPAViT(img_size=32, patch_size=8, embed_dim=96, depth=2, num_heads=3), states["encoder"], "encoder")


def test_predictor_shapes_multi_block():
    pred = JEPAPredictor(embed_dim=64, predictor_embed_dim=32, depth=1, num_heads=2, img_size=64, patch_size=16)
    x = torch.randn(3, 5, 64)
    masks_x = [torch.randint(0, 16, (3, 5))]
    masks = [torch.randint(0, 16, (3, 4)) for _ in range(4)]
    assert pred(x, masks_x, masks).shape == (12, 4, 64)


@pytest.mark.parametrize("depth,drop_path,fused", [(1, 0.0, True), (3, 0.0, True), (3, 0.3, True), (2, 0.0, False)])
def test_predictor_target_rows_only_equals_the_whole_last_block(depth, drop_path, fused):
    """The last block for the target rows only gives the official full-block outputs and gradients
    (train mode: the same drop-path draws per sample; the explicit-softmax attention path too)."""
    torch.manual_seed(0)
    pred = JEPAPredictor(embed_dim=48, predictor_embed_dim=32, depth=depth, num_heads=4, img_size=64, patch_size=16,
                         drop_path_rate=drop_path).train()
    for blk in pred.predictor_blocks:
        blk.attn.fused_attn = fused
    x = torch.randn(2, 9, 48, requires_grad=True)
    masks_x = [torch.stack([torch.randperm(16)[:9] for _ in range(2)])]
    masks = [torch.randint(0, 16, (2, 3)) for _ in range(4)]
    outputs, grads = [], []
    for rows_only in (True, False):
        pred.target_rows_only = rows_only
        torch.manual_seed(1)
        out = pred(x, masks_x, masks)
        (g,) = torch.autograd.grad(out.square().sum(), x)
        outputs.append(out)
        grads.append(g)
    assert outputs[0].shape == (8, 3, 48)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)
