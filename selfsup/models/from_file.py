"""An encoder, architecture included, from a file alone (for tools: export, visualise).

- our Lightning checkpoint (``*.ckpt``): the architecture is the run's ``backbone`` config saved in
  the checkpoint, the weights its ``objective.<checkpoint_key>.*`` entries;
- a backbone ``*.safetensors``: the architecture is its ``timm_kwargs`` metadata;
- an official I-JEPA ``*.pth.tar`` or a plain state dict: the architecture is read off the shapes
  (width, patch, depth, MLP ratio, grid, qkv bias); the number of heads is not in the weights and
  comes from the official ViT sizes by width (tiny ... giant), or ``num_heads`` for another width.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from selfsup.models.backbone import jepa_vit, read_backbone_state
from selfsup.models.vit import VIT_SIZES, JEPAViT
from selfsup.training.checkpoint import CheckpointError, read_checkpoint
from selfsup.training.export import load_encoder

ARCH_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias")


def architecture_from_state(state: dict[str, torch.Tensor], num_heads: int | None = None) -> dict:
    """``JEPAViT`` architecture arguments implied by an encoder state dict (see the module docstring)."""
    if "patch_embed.proj.weight" not in state:
        raise CheckpointError(f"not a ViT encoder state dict (no patch_embed.proj.weight; keys: {sorted(state)[:8]} ...)")
    embed_dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    side = math.isqrt(state["pos_embed"].shape[1])
    if num_heads is None:
        widths = {d: heads for d, _, heads, _ in VIT_SIZES.values()}
        if embed_dim not in widths:
            raise CheckpointError(
                f"width {embed_dim} is not an official ViT size ({sorted(widths)}): pass num_heads=<heads>"
            )
        num_heads = widths[embed_dim]
    return {
        "img_size": side * patch, "patch_size": patch, "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
        "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim, "qkv_bias": "blocks.0.attn.qkv.bias" in state,
    }


def encoder_from_file(
    path: str | os.PathLike, checkpoint_key: str = "target_encoder", num_heads: int | None = None
) -> JEPAViT:
    """A ``JEPAViT`` loaded strictly from ``path`` (any format of the module docstring)."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        _, meta = load_encoder(path)
        arch = {k: v for k, v in json.loads(meta["timm_kwargs"]).items() if k in ARCH_KEYS}
    elif path.suffix == ".ckpt":
        config = read_checkpoint(path).get("config")
        if not config or "backbone" not in config:
            raise CheckpointError(f"{path} has no saved run config; export its backbone .safetensors instead")
        arch = {k: v for k, v in config["backbone"].items() if k not in ("_target_", "checkpoint", "checkpoint_key")}
    else:
        arch = architecture_from_state(read_backbone_state(path, checkpoint_key), num_heads)
    return jepa_vit(checkpoint=str(path), checkpoint_key=checkpoint_key, **arch)
