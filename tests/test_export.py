"""tools/export.py: the EMA target (or context) encoder as timm safetensors + JSON; timm.create_model
with them gives exactly our features; official I-JEPA checkpoints import into the same format."""

from __future__ import annotations

import json

import timm
import torch
from omegaconf import OmegaConf

from selfsup.models.backbone import jepa_vit
from selfsup.training.export import load_encoder, read_timm_spec
from tests.helpers import make_official_checkpoint, run_command
from tests.test_config import compose


def _timm_model(spec_path) -> torch.nn.Module:
    spec = read_timm_spec(spec_path)
    return timm.create_model(spec["model_name"], pretrained=True, pretrained_cfg_overlay=spec["pretrained_cfg_overlay"],
                             **spec["model_args"]).eval()


def _our_checkpoint(tmp_path):
    """A checkpoint laid out as training writes it: state dict + the resolved run config."""
    cfg = compose(["experiment=ijepa"], tmp_path)
    backbone = OmegaConf.to_container(cfg.backbone, resolve=True)
    torch.manual_seed(0)
    target, online = (jepa_vit(**{k: v for k, v in backbone.items() if k != "_target_"}) for _ in range(2))
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    state = {f"objective.target_encoder.{k}": v for k, v in target.state_dict().items()}
    state.update({f"objective.encoder.{k}": v for k, v in online.state_dict().items()})
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.6.6", "config": {"backbone": backbone}}, path)
    return path, target.eval(), online.eval()


def test_export_round_trip_through_timm_is_exact(tmp_path):
    ckpt, target, online = _our_checkpoint(tmp_path)
    out = tmp_path / "encoder.safetensors"
    run_command("python tools/export.py checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt out=encoder.safetensors",
                tmp_path, [f"checkpoint={ckpt}", f"out={out}"])
    spec = json.loads((tmp_path / "encoder.json").read_text())
    assert spec["encoder"] == "target_encoder" and spec["model_args"]["embed_dim"] == 128
    model = _timm_model(tmp_path / "encoder.json")
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = target.forward_tokens(images)
        assert torch.equal(model.forward_features(images), ours)
        assert torch.equal(model(images), ours.mean(1))
    # the context encoder on request
    out2 = tmp_path / "context.safetensors"
    run_command("python tools/export.py checkpoint=outputs/ijepa/myrun/checkpoints/last.ckpt out=encoder.safetensors",
                tmp_path, [f"checkpoint={ckpt}", f"out={out2}", "encoder=encoder"])
    state, meta = load_encoder(out2)
    assert meta["encoder"] == "encoder" and all(torch.equal(state[k], v) for k, v in online.state_dict().items())


def test_official_ijepa_checkpoint_imports(tmp_path):
    path, _, official_target, _ = make_official_checkpoint(tmp_path)  # width 48, 3 heads, 32 px, patch 8
    out = tmp_path / "ijepa_vith14.safetensors"
    command = "python tools/export.py checkpoint=IN1K-vit.h.14-300e.pth.tar out=ijepa_vith14.safetensors"
    failed = run_command(command, tmp_path, [f"checkpoint={path}", f"out={out}"], check=False)
    assert failed.returncode != 0 and "pass num_heads=" in failed.stderr  # 48 is not an official width
    run_command(command, tmp_path, [f"checkpoint={path}", f"out={out}", "num_heads=3"])
    model = _timm_model(tmp_path / "ijepa_vith14.json")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images), official_target(images), atol=1e-5, rtol=1e-5)
    # ... and it is a backbone this project loads strictly
    ours = jepa_vit(checkpoint=str(out), img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)
    with torch.no_grad():
        assert torch.equal(ours.forward_tokens(images), model.forward_features(images))

