"""``backbone.checkpoint=<path>``: every supported format loads strictly; mismatches list the keys."""

from __future__ import annotations

import pytest
import torch

from selfsup.models.backbone import jepa_vit, read_backbone_state
from selfsup.models.pos_embed import sincos_2d
from selfsup.models.vit import JEPAViT
from selfsup.training.checkpoint import CheckpointError, read_checkpoint
from selfsup.training.export import save_encoder
from selfsup.training.layer_decay import layer_decay_param_groups, vit_layer_id
from tests.helpers import make_official_checkpoint, run_train

ARCH = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


def _trained_like() -> JEPAViT:
    torch.manual_seed(3)
    model = JEPAViT(**ARCH)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    return model


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_lightning_checkpoint_target_and_context_encoders(tmp_path):
    target, online = _trained_like(), JEPAViT(**ARCH)
    state = {f"objective.target_encoder.{k}": v for k, v in target.state_dict().items()}
    state.update({f"objective.encoder.{k}": v for k, v in online.state_dict().items()})
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.6.6", "global_step": 10}, tmp_path / "last.ckpt")
    assert _same(jepa_vit(checkpoint=str(tmp_path / "last.ckpt"), **ARCH), target)
    assert _same(jepa_vit(checkpoint=str(tmp_path / "last.ckpt"), checkpoint_key="encoder", **ARCH), online)


def test_backbone_safetensors_and_plain_state_dict(tmp_path):
    target = _trained_like()
    save_encoder(target, tmp_path / "b.safetensors", which="target_encoder")
    assert _same(jepa_vit(checkpoint=str(tmp_path / "b.safetensors"), **ARCH), target)
    torch.save({f"module.{k}": v for k, v in target.state_dict().items()}, tmp_path / "plain.pth")
    assert _same(jepa_vit(checkpoint=str(tmp_path / "plain.pth"), **ARCH), target)


def test_official_ijepa_checkpoint_uses_the_target_encoder_by_default(tmp_path):
    path, ref_enc, ref_tgt, _ = make_official_checkpoint(tmp_path)
    model = jepa_vit(checkpoint=str(path), **ARCH)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.forward_tokens(x), ref_tgt(x), atol=1e-5, rtol=1e-5)
    ctx = jepa_vit(checkpoint=str(path), checkpoint_key="encoder", **ARCH)
    torch.testing.assert_close(ctx.forward_tokens(x), ref_enc(x), atol=1e-5, rtol=1e-5)


def test_other_resolution_rederives_the_position_table(tmp_path):
    target = _trained_like()
    save_encoder(target, tmp_path / "b.safetensors", which="target_encoder")
    big = jepa_vit(checkpoint=str(tmp_path / "b.safetensors"), **{**ARCH, "img_size": 64})
    assert torch.equal(big.pos_embed[0], sincos_2d(48, (8, 8), base_grid=(4, 4)))
    small_state = {k: v for k, v in target.state_dict().items() if k != "pos_embed"}
    assert all(torch.equal(v, big.state_dict()[k]) for k, v in small_state.items())


def test_mismatch_and_missing_files_are_explained(tmp_path):
    save_encoder(_trained_like(), tmp_path / "b.safetensors", which="target_encoder")
    with pytest.raises(CheckpointError, match=r"(?s)missing keys \(12\): blocks\.2\..*check the backbone size"):
        jepa_vit(checkpoint=str(tmp_path / "b.safetensors"), **{**ARCH, "depth": 3})
    with pytest.raises(CheckpointError, match="does not exist"):
        jepa_vit(checkpoint=str(tmp_path / "nope.ckpt"), **ARCH)
    torch.save({"state_dict": {"objective.predictor.x": torch.zeros(1)}, "pytorch-lightning_version": "2"}, tmp_path / "p.ckpt")
    with pytest.raises(CheckpointError, match="no 'objective.target_encoder.\\*' weights"):
        read_backbone_state(tmp_path / "p.ckpt")


def test_pretraining_can_start_from_a_checkpoint(tmp_path):
    run_train(["experiment=ijepa", "debug=fast", "run_name=first"], tmp_path)
    ckpt = tmp_path / "ijepa" / "first" / "checkpoints" / "last.ckpt"
    run_train(["experiment=ijepa", "debug=fast", "run_name=second", f"backbone.checkpoint={ckpt}"], tmp_path)
    first = read_checkpoint(ckpt)["state_dict"]
    second_cfg = read_checkpoint(tmp_path / "ijepa" / "second" / "checkpoints" / "last.ckpt")["config"]
    assert second_cfg["backbone"]["checkpoint"] == str(ckpt) and "objective.encoder.pos_embed" in first


def test_layer_decay_groups_follow_the_beit_convention():
    model = torch.nn.Module()
    model.backbone = JEPAViT(**ARCH)
    model.head = torch.nn.Linear(48, 5)
    groups = layer_decay_param_groups(model.named_parameters(), num_layers=2, layer_decay=0.5, weight_decay=0.05)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.backbone.patch_embed.proj.weight)]["lr_scale"] == 0.5**3
    assert by_param[id(model.backbone.blocks[0].attn.qkv.weight)]["lr_scale"] == 0.5**2
    assert by_param[id(model.backbone.blocks[1].mlp.fc1.weight)]["lr_scale"] == 0.5
    assert by_param[id(model.head.weight)]["lr_scale"] == 1.0
    assert by_param[id(model.head.bias)]["weight_decay"] == 0.0 and by_param[id(model.head.weight)]["weight_decay"] == 0.05
    assert id(model.backbone.pos_embed) not in by_param  # frozen
    assert vit_layer_id("backbone.norm.weight", 12) == 13 and vit_layer_id("blocks.11.norm1.bias", 12) == 12
