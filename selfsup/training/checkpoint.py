"""Checkpoint I/O: atomic writes, safe loading, strict state-dict loading with a readable diff.

- ``AtomicCheckpointIO`` is the Lightning plugin every trainer config uses: checkpoints are written
  to a temporary file, fsynced and renamed (never half-written), and read with
  ``torch.load(weights_only=True)``; an unreadable file raises ``CheckpointError`` naming it.
- ``load_strict`` never drops keys silently: it lists missing, unexpected and mis-shaped keys.
- ``read_official_ijepa`` reads an official I-JEPA ``.pth.tar`` (``encoder``, ``target_encoder``,
  ``predictor`` with the DDP ``module.`` prefix) into plain state dicts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from selfsup.training.files import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that does not match the model."""


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with an actionable error for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle error, non-weights object ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a weights-only checkpoint ({type(err).__name__}: {err})"
        ) from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint plugin: atomic ``torch.save``, ``weights_only`` loading."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO does not take storage_options, got {storage_options!r}")
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError("refusing to load a checkpoint with weights_only=False")
        return read_checkpoint(path, map_location=map_location or "cpu")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (e.g. DDP's ``module.``)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def state_dict_diff(module: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, shape_mismatch)`` keys of ``state`` against ``module``."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    return missing, unexpected, mismatched


def _preview(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` only if every key and shape matches; otherwise list the differences."""
    missing, unexpected, mismatched = state_dict_diff(module, state)
    if missing or unexpected or mismatched:
        lines = [f"{what} does not match the model:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {_preview(mismatched)}")
        lines.append("  check the backbone size/patch/img_size in the config against the checkpoint")
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(state, strict=True)


OFFICIAL_IJEPA_KEYS = ("encoder", "target_encoder", "predictor")


def read_official_ijepa(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """``{"encoder", "target_encoder", "predictor"}`` state dicts of an official I-JEPA checkpoint."""
    checkpoint = read_checkpoint(path)
    absent = [k for k in OFFICIAL_IJEPA_KEYS if k not in checkpoint]
    if absent:
        raise CheckpointError(
            f"{path} is not an official I-JEPA checkpoint: it lacks {absent} (has {sorted(checkpoint)})"
        )
    return {k: strip_prefix(checkpoint[k], "module.") for k in OFFICIAL_IJEPA_KEYS}
