"""Segmentation models: the paper structures and sizes, shapes at several resolutions, inference
modes, frozen backbones, loss conventions and layer-wise lr decay."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import instantiate
from selfsup.models.backbone import jepa_vit
from selfsup.training.layer_decay import layer_decay_param_groups
from tasks.segmentation.conv_module import ConvModule
from tasks.segmentation.encoder import ViTMultiLevel
from tasks.segmentation.fcn_head import FCNHead
from tasks.segmentation.inference import SegInference
from tasks.segmentation.neck import MultiScaleNeck
from tasks.segmentation.segmentor import Segmentor, segmentation_loss
from tasks.segmentation.uper_head import UPerHead
from tests.test_config import compose


def tiny_vit(patch: int = 8, depth: int = 4, dim: int = 32, img: int = 32):
    torch.manual_seed(0)
    return jepa_vit(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=2)


def upernet(vit, out_indices, rescales, channels=16, aux_channels=8, num_classes=5, frozen_stages=-1) -> Segmentor:
    d = vit.embed_dim
    return Segmentor(
        ViTMultiLevel(vit, out_indices, frozen_stages, False),
        MultiScaleNeck(d, rescales),
        UPerHead([d] * 4, channels, [1, 2, 3, 6], num_classes, 0.1, False),
        FCNHead(d, 2, aux_channels, 1, False, num_classes, 0.1, False),
        0.4, 255, False, False,
    )


def linear(vit, out_indices, num_classes=5) -> Segmentor:
    d = vit.embed_dim
    head = FCNHead([d] * len(out_indices), list(range(len(out_indices))), None, 0, False, num_classes, 0.0, False)
    return Segmentor(ViTMultiLevel(vit, out_indices, len(vit.blocks), False), None, head, None, 0.0, 255, False, False)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ the paper configurations
def test_paper_upernet_vitb16_has_the_reference_structure_and_163_3m_parameters(tmp_path):
    cfg = compose(["experiment=seg_upernet_ade20k_vitb16"], tmp_path)
    with torch.device("meta"):
        module = instantiate(cfg.model)
    seg = module.segmentor
    assert round(n_params(seg) / 1e6, 1) == 163.3  # spec 4a / mmseg MAE ViT-B UperNet
    assert seg.encoder.out_indices == [3, 5, 7, 11] and seg.encoder.frozen_stages == -1 and not seg.encoder.norm
    fpn1, fpn2, fpn3, fpn4 = seg.neck.levels
    assert [type(m) for m in fpn1] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.GELU, nn.ConvTranspose2d]
    assert [type(m) for m in fpn2] == [nn.ConvTranspose2d] and isinstance(fpn3, nn.Identity)
    assert isinstance(fpn4, nn.MaxPool2d) and fpn4.kernel_size == 2 and fpn4.stride == 2
    head = seg.decode_head
    assert [stage[0].output_size for stage in head.psp.stages] == [1, 2, 3, 6]
    assert head.bottleneck[0].in_channels == 768 + 4 * 768 and head.fpn_bottleneck[0].in_channels == 4 * 768
    assert isinstance(head.classifier[0], nn.Dropout2d) and head.classifier[0].p == 0.1
    assert head.classifier[1].out_channels == 150
    for conv_module in [m for m in seg.modules() if isinstance(m, ConvModule)]:
        conv, norm, act = conv_module
        assert conv.bias is None and isinstance(norm, nn.BatchNorm2d) and isinstance(act, nn.ReLU)
    aux = seg.auxiliary_head
    assert aux.in_index == 2 and len(aux.convs) == 1 and aux.convs[0][0].out_channels == 256 and seg.aux_weight == 0.4
    assert module.layer_decay == 0.65 and module.weight_decay == 0.05
    assert module.inference.mode == "slide" and module.inference.crop_size == (512, 512)
    assert module.schedule.warmup_steps == 1500 and module.schedule.power == 1.0 and module.schedule.total_steps == 160000


def test_paper_linear_vitb16_is_a_frozen_backbone_and_one_1x1_conv_on_3072_channels(tmp_path):
    cfg = compose(["experiment=seg_linear_ade20k_vitb16"], tmp_path)
    with torch.device("meta"):
        module = instantiate(cfg.model)
    seg = module.segmentor
    assert seg.neck is None and seg.auxiliary_head is None
    assert seg.encoder.out_indices == [3, 5, 7, 11] and seg.encoder.fully_frozen
    head = seg.decode_head
    assert len(head.convs) == 0 and head.conv_cat is None and len(head.classifier) == 1
    conv = head.classifier[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3072, 150, (1, 1))
    trainable = sum(p.numel() for p in seg.parameters() if p.requires_grad)
    assert trainable == 3072 * 150 + 150
    assert module.inference.mode == "slide" and module.inference.stride == (341, 341)


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("size", [(32, 32), (48, 80), (96, 64), (128, 128)])
def test_head_outputs_at_several_resolutions(size):
    vit = tiny_vit(patch=8)
    h, w = size
    seg = upernet(vit, [0, 1, 2, 3], [2, 1, 0.5, 0.25]).eval()
    x = torch.randn(2, 3, h, w)
    feats = seg.features(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(h // 4, w // 4), (h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32)]
    assert seg(x).shape == (2, 5, h // 4, w // 4)  # UPerHead: stride 4
    assert seg.auxiliary_head(feats).shape == (2, 5, h // 16, w // 16)
    assert seg.predict(x).shape == (2, 5, h, w)
    lin = linear(vit, [0, 1, 2, 3]).eval()
    assert lin(x).shape == (2, 5, h // 8, w // 8) and lin.predict(x).shape == (2, 5, h, w)


def test_patch16_pyramid_has_strides_4_8_16_32():
    vit = tiny_vit(patch=16, img=64)
    seg = upernet(vit, [0, 1, 2, 3], [4, 2, 1, 0.5]).eval()
    feats = seg.features(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_features_are_the_raw_block_outputs_of_the_backbone():
    vit = tiny_vit().eval()
    x = torch.randn(1, 3, 32, 40)
    feats = ViTMultiLevel(vit, [1, 3], -1, False)(x)
    tokens = vit.patch_embed(x)
    tokens = vit._pos_embed(tokens)
    outs = []
    for blk in vit.blocks:
        tokens = blk(tokens)
        outs.append(tokens)
    for f, t in zip(feats, (outs[1], outs[3])):
        torch.testing.assert_close(f, t.reshape(1, 4, 5, -1).permute(0, 3, 1, 2))
    assert torch.allclose(ViTMultiLevel(vit, [3], -1, True)(x)[0].flatten(2).transpose(1, 2), vit.forward_tokens(x))


def test_input_not_a_multiple_of_the_patch_is_explained():
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        ViTMultiLevel(tiny_vit(), [1], -1, False)(torch.randn(1, 3, 30, 32))


# ------------------------------------------------------------------ inference
def test_sliding_window_equals_whole_image_when_the_window_covers_the_image():
    seg = upernet(tiny_vit(), [0, 1, 2, 3], [2, 1, 0.5, 0.25]).eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        whole = SegInference("whole", 64, 32, 8)(seg.predict, x)
        for window in (64, (48, 64), 96):
            slide = SegInference("slide", window, 32, 8)(seg.predict, x)
            torch.testing.assert_close(slide, whole, rtol=0, atol=0)


def test_sliding_window_averages_overlapping_windows_exactly():
    """With a per-pixel model every window predicts the same logits at a pixel: the average is exact."""
    torch.manual_seed(0)
    pixelwise = nn.Conv2d(3, 4, 1)
    x = torch.randn(1, 3, 70, 50)
    inference = SegInference("slide", 32, 21, 8)
    with torch.no_grad():
        torch.testing.assert_close(inference(pixelwise, x), pixelwise(x))
    windows = inference.windows(70, 50)
    covered = torch.zeros(70, 50)
    for y1, y2, x1, x2 in windows:
        assert (y2 - y1, x2 - x1) == (32, 32)
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1 and len(windows) == 3 * 2


def test_window_positions_follow_mmseg():
    # ADE20K at short side 512: a 512 x 683 image, crop 512, stride 341 -> 2 windows, the last aligned right
    assert SegInference("slide", 512, 341, 16).windows(512, 683) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    assert SegInference("slide", 512, 256, 16).windows(512, 683) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    assert len(SegInference("slide", 512, 256, 16).windows(512, 1024)) == 3


def test_whole_image_inference_pads_to_the_patch_size():
    seg = upernet(tiny_vit(), [0, 1, 2, 3], [2, 1, 0.5, 0.25]).eval()
    with torch.no_grad():
        out = SegInference("whole", 64, 64, 8)(seg.predict, torch.randn(1, 3, 45, 61))
    assert out.shape == (1, 5, 45, 61)


# ------------------------------------------------------------------ freezing
def test_frozen_backbone_gets_no_gradients_and_stays_in_eval_mode():
    vit = tiny_vit(depth=4)
    vit.blocks[0].drop_path1 = nn.Dropout(0.5)  # a stochastic layer that must not act when frozen
    seg = linear(vit, [1, 3]).train()
    assert all(not m.training for m in vit.blocks) and seg.decode_head.training
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    seg.loss(x, y)["loss"].backward()
    assert all(p.grad is None for p in vit.parameters())
    assert all(p.grad is not None for p in seg.decode_head.parameters())


def test_partially_frozen_backbone_trains_the_top_blocks_only():
    vit = tiny_vit(depth=4)
    seg = upernet(vit, [0, 1, 2, 3], [2, 1, 0.5, 0.25], frozen_stages=2).train()
    assert not vit.patch_embed.training and not vit.blocks[1].training and vit.blocks[2].training
    seg.loss(torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32)))["loss"].backward()
    assert all(p.grad is None for p in [*vit.patch_embed.parameters(), *vit.blocks[:2].parameters()])
    assert all(p.grad is not None for p in vit.blocks[2:].parameters())
    groups = layer_decay_param_groups(seg.named_parameters(), 4, 0.65, 0.05)
    optimised = {id(p) for g in groups for p in g["params"]}
    assert not optimised & {id(p) for p in vit.blocks[0].parameters()}


def test_layer_decay_scales_blocks_and_leaves_heads_at_the_full_lr():
    vit = tiny_vit(depth=4)
    seg = upernet(vit, [0, 1, 2, 3], [2, 1, 0.5, 0.25])
    groups = layer_decay_param_groups(seg.named_parameters(), 4, 0.65, 0.05)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert scale_of[id(vit.patch_embed.proj.weight)] == pytest.approx(0.65**5)
    assert scale_of[id(vit.blocks[0].attn.qkv.weight)] == pytest.approx(0.65**4)
    assert scale_of[id(vit.blocks[3].mlp.fc1.weight)] == pytest.approx(0.65)
    assert scale_of[id(seg.decode_head.classifier[-1].weight)] == 1.0
    assert wd_of[id(seg.decode_head.classifier[-1].bias)] == 0.0 and wd_of[id(vit.blocks[0].norm1.weight)] == 0.0
    assert wd_of[id(seg.neck.levels[0][0].weight)] == 0.05


# ------------------------------------------------------------------ loss
def test_loss_averages_over_all_pixels_like_mmseg_or_over_labelled_ones():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 16, 16))
    labels[:, :4] = 255
    up = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(up, labels, ignore_index=255, reduction="none")
    assert torch.allclose(segmentation_loss(logits, labels, 255, avg_non_ignore=False), per_pixel.sum() / labels.numel())
    assert torch.allclose(segmentation_loss(logits, labels, 255, avg_non_ignore=True), F.cross_entropy(up, labels, ignore_index=255))


def test_upernet_loss_adds_the_weighted_auxiliary_loss():
    seg = upernet(tiny_vit(), [0, 1, 2, 3], [2, 1, 0.5, 0.25])
    out = seg.loss(torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32)))
    assert torch.allclose(out["loss"], out["loss_decode"] + out["loss_aux"])
    assert 0 <= out["acc"] <= 100


def test_invalid_settings_are_explained():
    with pytest.raises(ValueError, match="out_indices"):
        ViTMultiLevel(tiny_vit(depth=4), [1, 4], -1, False)
    with pytest.raises(ValueError, match="frozen_stages"):
        ViTMultiLevel(tiny_vit(depth=4), [1], 5, False)
    with pytest.raises(ValueError, match="rescales"):
        MultiScaleNeck(8, [3, 1])
    with pytest.raises(ValueError, match="channels must be null or 24"):
        FCNHead([8, 8, 8], [0, 1, 2], 16, 0, False, 3, 0.0, False)
    with pytest.raises(ValueError, match="inference.mode"):
        SegInference("tiles", 8, 8, 8)
