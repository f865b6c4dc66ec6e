"""Any timm Vision Transformer by name, with local weights (``backbone=timm backbone.name=...``).

``timm_vit(name, checkpoint, checkpoint_key, img_size)`` builds ``timm.create_model(name,
pretrained=False, num_classes=0, dynamic_img_size=True)`` -- nothing is downloaded -- and loads
``checkpoint`` (``.safetensors``, or a ``torch.load``-able file read with ``weights_only=True``;
``checkpoint_key`` picks a nested state dict such as MAE's ``model`` or DINO's ``teacher``; ``module.``
is stripped) through timm's own ``checkpoint_filter_fn`` for the model (original-layout conversions,
position-embedding resampling to ``img_size``), then strictly: classifier weights (``head.*``) are
dropped by name (the probe brings its own) and anything else that does not match is listed.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from selfsup.training.checkpoint import CheckpointError, load_strict, read_checkpoint, strip_prefix

log = logging.getLogger("selfsup")


def read_state(path: str | Path, checkpoint_key: str | None) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"backbone.checkpoint={path} does not exist")
    raw = load_file(str(path)) if path.suffix == ".safetensors" else read_checkpoint(path)
    if checkpoint_key is not None:
        if checkpoint_key not in raw:
            raise CheckpointError(f"{path} has no '{checkpoint_key}' entry (it has: {', '.join(sorted(raw))})")
        raw = raw[checkpoint_key]
    if not all(isinstance(v, torch.Tensor) for v in raw.values()):
        nested = sorted(k for k, v in raw.items() if isinstance(v, dict))
        raise CheckpointError(f"{path} is not a flat state dict; pick the weights with backbone.checkpoint_key=<one of {nested}>")
    return strip_prefix(raw, "module.")


def timm_vit(name: str, checkpoint: str | None = None, checkpoint_key: str | None = None, img_size: int = 224) -> nn.Module:
    """Config keys (``configs/backbone/timm.yaml``): ``name``, ``checkpoint``, ``checkpoint_key``, ``img_size``."""
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, dynamic_img_size=True)
    except RuntimeError as err:
        raise ValueError(f"backbone.name={name!r} is not a timm model ({err}); see timm.list_models('vit_*')") from err
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
        raise ValueError(f"backbone.name={name!r} is not a Vision Transformer with blocks (probing reads block tokens)")
    if checkpoint:
        state = read_state(checkpoint, checkpoint_key)
        filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            state = filter_fn(state, model)
        classifier = sorted(k for k in state if k.startswith("head.") and k not in model.state_dict())
        if classifier:
            log.info("backbone: dropping the checkpoint's classifier %s (the probe brings its own)", classifier)
            state = {k: v for k, v in state.items() if k not in classifier}
        load_strict(model, state, f"backbone.checkpoint={checkpoint} (timm {name})")
        log.info("backbone: loaded timm %s from %s", name, checkpoint)
    return model
