"""Backbone-only ``safetensors`` files with timm's key layout.

The file holds the encoder state dict exactly as ``timm.models.vision_transformer.VisionTransformer``
names it, and in its metadata the JSON of the timm constructor arguments (``timm_kwargs``) and which
encoder it is (``encoder``: ``target_encoder`` or ``encoder``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import torch
from safetensors.torch import load_file, safe_open, save_file

from selfsup.models.vit import JEPAViT
from selfsup.training.files import atomic_write


def save_encoder(
    encoder: JEPAViT,
    path: str | os.PathLike,
    which: str,
    extra: dict[str, str] | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write ``encoder``'s weights (or ``state``, e.g. gathered from FSDP shards) with its timm metadata."""
    state = encoder.state_dict() if state is None else state
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    metadata = {"format": "pt", "encoder": which, "timm_kwargs": json.dumps(encoder.timm_kwargs())}
    metadata.update(extra or {})
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def load_encoder(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state_dict, metadata)`` of a file written by ``save_encoder``."""
    with safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
    return load_file(str(path)), metadata
