"""ViTDet backbone on our ViT: window attention, relative positions, the simple feature pyramid,
checkpoint compatibility and the optimiser's parameter groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from selfsup.models.backbone import jepa_vit
from selfsup.models.vit import JEPAViT
from selfsup.training.export import save_encoder
from tasks.detection.optim import detection_param_groups
from tasks.detection.pyramid import SimpleFeaturePyramid
from tasks.detection.vitdet_backbone import ViTDetBackbone
from tasks.detection.windows import relative_positions, window_partition, window_unpartition


def tiny_vit(img=64, patch=16, dim=48, depth=4, heads=3, seed=0) -> JEPAViT:
    torch.manual_seed(seed)
    return JEPAViT(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads).eval()


def backbone(vit, window=0, global_blocks=(), rel_pos=False, final_norm=False) -> ViTDetBackbone:
    return ViTDetBackbone(vit, window, list(global_blocks), rel_pos, True, final_norm).eval()


# ---------------------------------------------------------------- window attention
def test_global_attention_everywhere_is_the_plain_vit_last_block():
    vit = tiny_vit()
    x = torch.randn(2, 3, 64, 96)
    expected = vit.forward_intermediates(x, indices=1, intermediates_only=True, output_fmt="NCHW")[-1]
    torch.testing.assert_close(backbone(vit)(x), expected, rtol=1e-5, atol=1e-5)
    normed = vit.norm(expected.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(backbone(vit, final_norm=True)(x), normed, rtol=1e-5, atol=1e-5)


def reference_window_block(block, x, window):
    """detectron2 ``Block.forward`` with window attention, written out window by window: norm1, zero
    padding to a multiple of the window, attention inside each window, crop, residual, MLP."""
    b, h, w, c = x.shape
    y = block.norm1(x)
    hp, wp = -(-h // window) * window, -(-w // window) * window
    padded = torch.zeros(b, hp, wp, c)
    padded[:, :h, :w] = y
    out = torch.zeros_like(padded)
    for i in range(0, hp, window):
        for j in range(0, wp, window):
            tokens = padded[:, i : i + window, j : j + window].reshape(b, window * window, c)
            out[:, i : i + window, j : j + window] = block.attn(tokens).reshape(b, window, window, c)
    x = x + out[:, :h, :w]
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("size", [(64, 64), (80, 112)])  # 4x4 tokens (2x2 windows) and 5x7 tokens (padded)
def test_window_blocks_match_a_window_by_window_reference(size):
    vit = tiny_vit(img=64)
    net = backbone(vit, window=2, global_blocks=[1, 3])
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        x = x.view(2, size[0] // 16, size[1] // 16, -1)
        for i, block in enumerate(vit.blocks):
            x = block(x.flatten(1, 2)).view_as(x) if i in (1, 3) else reference_window_block(block, x, 2)
        torch.testing.assert_close(net(images), x.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert net.windows == [2, 0, 2, 0]


def test_window_partition_round_trip_and_padding():
    x = torch.randn(2, 5, 7, 3)
    windows, padded = window_partition(x, 3)
    assert windows.shape == (2 * 2 * 3, 3, 3, 3) and padded == (6, 9)
    assert torch.equal(window_unpartition(windows, 3, padded, (5, 7)), x)
    assert torch.equal(windows[0], x[0, :3, :3]) and windows[-1, 2:].abs().sum() == 0  # zero padding at the bottom


def reference_rel_pos_attention(attn, x, size, table_h, table_w):
    """detectron2 ``Attention.forward`` with ``use_rel_pos``: explicit softmax(q k^T * scale + bias) v."""
    b, n, c = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * heads, n, -1).unbind(0)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    h, w = size
    rh, rw = relative_positions(h, h, table_h), relative_positions(w, w, table_w)
    r_q = q.reshape(b * heads, h, w, -1)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    logits = (logits.view(-1, h, w, h, w) + rel_h[..., None] + rel_w[:, :, :, None, :]).view(-1, n, n)
    out = (logits.softmax(-1) @ v).view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, n, -1)
    return attn.proj(out)


def test_relative_positions_zero_init_changes_nothing_and_trained_tables_match_the_reference():
    vit = tiny_vit()
    plain, rel = backbone(vit, window=2, global_blocks=[3]), backbone(vit, window=2, global_blocks=[3], rel_pos=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rel(x), plain(x), rtol=1e-5, atol=1e-5)
    tables = rel.rel_pos.blocks
    assert tables[0].rel_pos_h.shape == (3, 16) and tables[3].rel_pos_h.shape == (7, 16)  # window 2 / 4x4 grid
    with torch.no_grad():
        for t in tables:
            t.rel_pos_h.normal_(0, 0.5)
            t.rel_pos_w.normal_(0, 0.5)
        tokens = torch.randn(2, 16, 48)
        from tasks.detection.vitdet_backbone import attention_with_bias

        ours = attention_with_bias(vit.blocks[3].attn, tokens, (4, 4), tables[3])
        ref = reference_rel_pos_attention(vit.blocks[3].attn, tokens, (4, 4), tables[3].rel_pos_h, tables[3].rel_pos_w)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(rel(x), plain(x), atol=1e-3)


def test_relative_position_table_is_resampled_for_another_length():
    table = torch.randn(7, 5)  # made for length 4
    out = relative_positions(6, 6, table)  # needs 11 entries
    resized = F.interpolate(table.t()[None], size=11, mode="linear")[0].t()
    assert out.shape == (6, 6, 5) and torch.equal(out[0, 0], resized[5]) and torch.equal(out[5, 0], resized[10])


def test_window_attention_keeps_checkpoint_compatibility(tmp_path):
    """Window attention changes the computation, not the weights: the ViT inside loads strictly."""
    vit = tiny_vit()
    path = tmp_path / "enc.safetensors"
    save_encoder(vit, path, which="target_encoder")
    loaded = jepa_vit(checkpoint=str(path), img_size=64, patch_size=16, embed_dim=48, depth=4, num_heads=3)
    net = backbone(loaded, window=2, global_blocks=[1], rel_pos=True)
    assert {k.removeprefix("vit.") for k in net.state_dict() if k.startswith("vit.")} == set(vit.state_dict())
    assert all(torch.equal(net.vit.state_dict()[k], v) for k, v in vit.state_dict().items())
    assert not any(p.requires_grad for p in net.vit.norm.parameters())  # unused without final_norm


def test_gradient_checkpointing_gives_the_same_gradients():
    vit = tiny_vit()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for checkpointing in (False, True):
        vit.set_grad_checkpointing(checkpointing)
        net = backbone(vit, window=2, global_blocks=[1], rel_pos=True).train()
        vit.zero_grad()
        net(x).square().mean().backward()
        grads.append(vit.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_global_block_indices_are_checked():
    with pytest.raises(ValueError, match=r"global_blocks \[7\] out of range for a ViT with 4 blocks"):
        backbone(tiny_vit(), window=2, global_blocks=[7])


# ---------------------------------------------------------------- simple feature pyramid
@pytest.mark.parametrize("size", [(64, 64), (128, 96), (224, 160), (96, 320)])
def test_pyramid_shapes_and_strides_patch16(size):
    net = backbone(tiny_vit(img=64, patch=16))
    sfp = SimpleFeaturePyramid(net, 32, [4.0, 2.0, 1.0, 0.5], True, "LN").eval()
    maps = sfp(torch.randn(2, 3, *size))
    assert list(maps) == ["p2", "p3", "p4", "p5", "p6"] and sfp.strides == [4, 8, 16, 32, 64]
    h, w = size
    for (name, fmap), stride in zip(maps.items(), sfp.strides):
        expected = (-(-h // stride), -(-w // stride)) if name == "p6" else (h // stride, w // stride)
        assert fmap.shape == (2, 32, *expected), (name, fmap.shape)


@pytest.mark.parametrize("size", [(64, 64), (128, 96), (160, 224)])
def test_pyramid_shapes_and_strides_patch8(size):
    net = backbone(tiny_vit(img=64, patch=8))
    sfp = SimpleFeaturePyramid(net, 16, [2.0, 1.0, 0.5, 0.25], True, "LN").eval()
    maps = sfp(torch.randn(1, 3, *size))
    assert sfp.strides == [4, 8, 16, 32, 64] and sfp.size_divisibility == 32
    for (name, fmap), stride in zip(list(maps.items())[:4], sfp.strides):
        assert fmap.shape == (1, 16, size[0] // stride, size[1] // stride), name


def test_pyramid_layers_are_vitdets():
    d = 48
    sfp = SimpleFeaturePyramid(backbone(tiny_vit(dim=d)), 32, [4.0, 2.0, 1.0, 0.5], True, "LN")
    kinds = lambda seq: [type(m).__name__ for m in seq]  # noqa: E731
    tail = ["Conv2d", "LayerNorm2d", "Conv2d", "LayerNorm2d"]
    assert kinds(sfp.simfp_2) == ["ConvTranspose2d", "LayerNorm2d", "GELU", "ConvTranspose2d", *tail]
    assert kinds(sfp.simfp_3) == ["ConvTranspose2d", *tail] and kinds(sfp.simfp_4) == tail
    assert kinds(sfp.simfp_5) == ["MaxPool2d", *tail]
    assert sfp.simfp_2[0].out_channels == d // 2 and sfp.simfp_2[3].out_channels == d // 4 and sfp.simfp_3[0].out_channels == d // 2
    assert sfp.simfp_2[4].in_channels == d // 4 and sfp.simfp_5[1].in_channels == d
    assert sfp.simfp_2[4].kernel_size == (1, 1) and sfp.simfp_2[6].kernel_size == (3, 3)
    stages = [getattr(sfp, name) for name in sfp.stage_names]
    assert all(c.bias is None for stage in stages for c in stage if type(c) is nn.Conv2d)
    assert all(m.eps == 1e-6 for stage in stages for m in stage if isinstance(m, LayerNorm2d))
    maps = sfp.eval()(torch.randn(1, 3, 64, 64))
    assert torch.equal(maps["p6"], F.max_pool2d(maps["p5"], 1, 2))


def test_pyramid_rejects_strides_that_do_not_double():
    with pytest.raises(ValueError, match="powers of two doubling"):
        SimpleFeaturePyramid(backbone(tiny_vit()), 16, [4.0, 1.0, 0.5], True, "LN")


# ---------------------------------------------------------------- optimiser groups
def test_layer_decay_and_vitdet_weight_decay_groups():
    vit = tiny_vit(depth=4)
    sfp = SimpleFeaturePyramid(backbone(vit, window=2, global_blocks=[1], rel_pos=True), 16, [4.0, 2.0, 1.0, 0.5], True, "LN")
    model = nn.ModuleDict({"backbone": sfp, "head": nn.Linear(4, 4)})
    groups = detection_param_groups(model, 4, 0.7, 0.1, "vitdet")
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())

    def group(name):
        return by_param[id(named[name])]

    assert group("backbone.net.vit.patch_embed.proj.weight")["lr_scale"] == pytest.approx(0.7**5)
    assert group("backbone.net.vit.blocks.2.attn.qkv.weight")["lr_scale"] == pytest.approx(0.7**2)
    assert group("backbone.net.rel_pos.blocks.2.rel_pos_h")["lr_scale"] == pytest.approx(0.7**2)  # its block's depth
    assert group("backbone.simfp_2.0.weight")["lr_scale"] == 1.0 and group("head.weight")["lr_scale"] == 1.0
    # ViTDet: the ViT's LayerNorms are not decayed; biases and the pyramid's channel LayerNorms are
    assert group("backbone.net.vit.blocks.0.norm1.weight")["weight_decay"] == 0.0
    assert group("backbone.net.vit.blocks.0.attn.qkv.bias")["weight_decay"] == 0.1
    assert group("backbone.simfp_2.1.weight")["weight_decay"] == 0.1
    assert group("backbone.net.rel_pos.blocks.0.rel_pos_w")["weight_decay"] == 0.1
    mae = detection_param_groups(model, 4, 0.7, 0.1, "mae")
    by_param = {id(p): g for g in mae for p in g["params"]}
    assert by_param[id(named["backbone.net.vit.blocks.0.attn.qkv.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["backbone.simfp_2.1.weight"])]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
