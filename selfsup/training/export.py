"""Backbone-only ``safetensors`` files with timm's key layout.

The file holds the encoder state dict exactly as ``timm.models.vision_transformer.VisionTransformer``
names it, and in its metadata the JSON of the timm constructor arguments (``timm_kwargs``) and which
encoder it is (``encoder``: ``target_encoder`` or ``encoder``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

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


TIMM_BASE_MODEL = "vit_base_patch16_224"  # a registered timm name; model_args override its architecture


def timm_spec(encoder: JEPAViT, weights_file: str, which: str, source: str) -> dict:
    """The JSON written beside an exported encoder: everything ``timm.create_model`` needs."""
    size = encoder.timm_kwargs()["img_size"]
    return {
        "model_name": TIMM_BASE_MODEL,
        "model_args": encoder.timm_kwargs(),
        "pretrained_cfg_overlay": {"file": weights_file, "num_classes": 0, "input_size": [3, *size],
                                   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "encoder": which,
        "source": source,
        "usage": "timm.create_model(spec['model_name'], pretrained=True, "
                 "pretrained_cfg_overlay=spec['pretrained_cfg_overlay'], **spec['model_args'])",
    }


def export_timm(encoder: JEPAViT, out: str | os.PathLike, which: str, source: str) -> tuple[str, str]:
    """Write ``out`` (safetensors, timm keys) and ``out`` with ``.json`` (``timm_spec``); return both paths.
    The JSON names the weights file relative to itself, resolved to an absolute path when read with
    ``read_timm_spec``."""
    out = os.fspath(out)
    save_encoder(encoder, out, which=which, extra={"source": source})
    spec_path = os.path.splitext(out)[0] + ".json"
    spec = timm_spec(encoder, os.path.basename(out), which, source)
    atomic_write(spec_path, lambda tmp: Path(tmp).write_text(json.dumps(spec, indent=2) + "\n"))
    return out, spec_path


def read_timm_spec(spec_path: str | os.PathLike) -> dict:
    """The JSON of ``export_timm`` with the weights file made absolute (ready for ``timm.create_model``)."""
    with open(spec_path) as fh:
        spec = json.load(fh)
    weights = spec["pretrained_cfg_overlay"]["file"]
    spec["pretrained_cfg_overlay"]["file"] = os.path.join(os.path.dirname(os.path.abspath(spec_path)), weights)
    return spec
