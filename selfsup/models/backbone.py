"""Building a JEPA backbone, fresh or from pretrained weights (``backbone.checkpoint=<path>``).

``jepa_vit(checkpoint=..., checkpoint_key=..., **architecture)`` is the ``_target_`` of every
``configs/backbone/*.yaml``. With ``checkpoint: null`` it is a freshly initialised ViT (pretraining).
With a path it loads, **strictly**, from any of:

- one of our Lightning checkpoints (``*.ckpt``): the ``objective.<checkpoint_key>.*`` entries;
- a backbone-only ``*.safetensors`` file written beside such a checkpoint (timm key layout);
- an official I-JEPA checkpoint (``*.pth.tar``): its ``checkpoint_key`` dict, ``module.`` stripped;
- a plain state dict (``*.pth``, ``*.pt``, ``*.bin``), ``module.`` stripped.

The frozen sin-cos position table is a function of position, not a learned weight: when the
checkpoint was trained at another resolution it is re-derived for this model's grid. Every other
key and shape must match, or the error lists the differences.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

from selfsup.models.pos_embed import resize_pos_embed
from selfsup.models.vit import JEPAViT
from selfsup.training.checkpoint import CheckpointError, load_strict, read_checkpoint, read_official_ijepa, strip_prefix
from selfsup.training.export import load_encoder

log = logging.getLogger("selfsup")
CHECKPOINT_KEYS = ("target_encoder", "encoder")


def read_backbone_state(path: str | os.PathLike, checkpoint_key: str = "target_encoder") -> dict[str, torch.Tensor]:
    """The encoder state dict stored in ``path`` (see the module docstring for the formats)."""
    if checkpoint_key not in CHECKPOINT_KEYS:
        raise ValueError(f"backbone.checkpoint_key={checkpoint_key!r}; valid: {', '.join(CHECKPOINT_KEYS)}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"backbone.checkpoint={path} does not exist")
    if path.suffix == ".safetensors":
        state, meta = load_encoder(path)
        if meta.get("encoder") not in (None, checkpoint_key):
            log.info("%s holds the %s; loading it (backbone.checkpoint_key=%s ignored)", path, meta["encoder"], checkpoint_key)
        return state
    if path.name.endswith(".pth.tar"):
        return read_official_ijepa(path)[checkpoint_key]
    raw = read_checkpoint(path)
    if "state_dict" in raw and "pytorch-lightning_version" in raw:
        prefix = f"objective.{checkpoint_key}."
        state = {k[len(prefix):]: v for k, v in raw["state_dict"].items() if k.startswith(prefix)}
        if not state:
            found = sorted({".".join(k.split(".")[:2]) for k in raw["state_dict"]})
            raise CheckpointError(f"{path} has no '{prefix}*' weights (it has: {', '.join(found)})")
        return state
    return strip_prefix(raw, "module.")


def adapt_pos_embed(state: dict[str, torch.Tensor], model: JEPAViT) -> dict[str, torch.Tensor]:
    """Re-derive a square checkpoint's ``pos_embed`` for ``model``'s grid when they differ."""
    table = state.get("pos_embed")
    if table is None or table.shape == model.pos_embed.shape:
        return state
    n = table.shape[1]
    side = math.isqrt(n)
    if side * side != n or table.shape[-1] != model.pos_embed.shape[-1]:
        return state  # not a square sin-cos table of this width: let the strict load report it
    state = dict(state)
    state["pos_embed"] = resize_pos_embed(table, (side, side), model.base_grid, model.pos_embed_interp)
    log.info("pos_embed: checkpoint grid %dx%d re-derived for grid %dx%d", side, side, *model.base_grid)
    return state


def jepa_vit(
    checkpoint: str | None = None,
    checkpoint_key: str = "target_encoder",
    img_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.0,
    pos_embed_interp: str = "sincos",
    depth_rescale_init: bool = False,
    grad_checkpointing: bool = False,
    in_chans: int = 3,
    patch_embed_init: str = "official",
) -> JEPAViT:
    """A ``JEPAViT`` (see its arguments), loaded from ``checkpoint`` if given.

    Config keys (``configs/backbone/*.yaml``): ``checkpoint``, ``checkpoint_key`` (target_encoder |
    encoder: which encoder of a JEPA checkpoint) and every ``JEPAViT`` argument.
    """
    model = JEPAViT(
        img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path_rate=drop_path_rate, pos_embed_interp=pos_embed_interp,
        depth_rescale_init=depth_rescale_init, grad_checkpointing=grad_checkpointing, in_chans=in_chans,
        patch_embed_init=patch_embed_init,
    )
    if checkpoint:
        state = adapt_pos_embed(read_backbone_state(checkpoint, checkpoint_key), model)
        load_strict(model, state, f"backbone.checkpoint={checkpoint} ({checkpoint_key})")
        log.info("backbone: loaded %s from %s", checkpoint_key, checkpoint)
    return model
