"""``ModelCheckpoint`` that also writes backbone-only safetensors next to every checkpoint it saves."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from selfsup.training.export import save_encoder
from selfsup.training.fsdp import full_state_dict, is_sharded

ENCODERS = ("target_encoder", "encoder")


def backbone_paths(checkpoint_path: str | Path) -> dict[str, Path]:
    """``{"target_encoder": <stem>.target_encoder.safetensors, "encoder": ...}`` beside a checkpoint."""
    p = Path(checkpoint_path)
    return {name: p.with_name(f"{p.stem}.{name}.safetensors") for name in ENCODERS}


class BackboneCheckpoint(ModelCheckpoint):
    """Lightning ``ModelCheckpoint`` (every argument passes through) plus, when ``export_backbones``,
    ``<name>.target_encoder.safetensors`` and ``<name>.encoder.safetensors`` (timm key layout) written
    atomically beside each ``<name>.ckpt``, and removed with it.

    Config keys (``configs/callbacks/*.yaml``): ``export_backbones`` and ModelCheckpoint's own.
    """

    def __init__(self, export_backbones: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.export_backbones = export_backbones

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if not self.export_backbones:
            return
        objective = getattr(trainer.lightning_module, "objective", None)
        for name, path in backbone_paths(filepath).items():
            encoder = getattr(objective, name, None)
            if encoder is None or not (trainer.is_global_zero or is_sharded(encoder)):
                continue
            state = full_state_dict(encoder) if is_sharded(encoder) else None  # collective under FSDP
            if trainer.is_global_zero:
                save_encoder(encoder, path, which=name, extra={"global_step": str(trainer.global_step)}, state=state)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            for path in backbone_paths(filepath).values():
                path.unlink(missing_ok=True)
