"""Saves the probe's attention maps over validation images every few epochs (and logs them to wandb).

Works with a ``ProbeModule`` whose head is a ``SingleProbe`` with a pooling that has
``attention_maps(tokens) -> [B, Q, T]`` (EP: one map per query; AbMILP, DOLG: one). Images are the
first ``num_images`` of the validation split, through the validation transform. Files:
``<run_dir>/attention_maps/epoch<NNN>.png``; with a ``WandbLogger`` also ``probe/attention_maps``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision import transforms as T

from selfsup.data.sampling import SampleKey
from selfsup.probing.attention_maps import query_maps, render_attention_maps

log = logging.getLogger("selfsup")


def _normalization(transform) -> tuple[torch.Tensor, torch.Tensor]:
    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    for step in steps:
        if isinstance(step, T.Normalize):
            return torch.tensor(step.mean).view(3, 1, 1), torch.tensor(step.std).view(3, 1, 1)
    return torch.zeros(3, 1, 1), torch.ones(3, 1, 1)


class AttentionMaps(L.Callback):
    """Config keys (``callbacks.attention_maps``): ``num_images``, ``every_n_epochs`` (the last epoch is always
    drawn), ``max_queries`` (columns), ``dirname`` (under the run directory)."""

    def __init__(self, num_images: int = 6, every_n_epochs: int = 10, max_queries: int = 32, dirname: str = "attention_maps") -> None:
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.max_queries = max_queries
        self.dirname = dirname
        self.saved: list[Path] = []

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch >= (trainer.max_epochs or 0)

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self._due(trainer):
            return
        head = getattr(getattr(pl_module, "heads", None), "probe", None)
        pool = head[0] if head is not None else None
        if pool is None or not hasattr(pool, "attention_maps") or pl_module.features.output != "tokens":
            return
        dm = trainer.datamodule
        dataset = dm.val_set
        n = min(self.num_images, len(dataset))
        images = torch.stack([dataset[SampleKey(i, 0, 0, 0)]["image"] for i in range(n)])
        tokens = pl_module.features(images.to(pl_module.device))["tokens"]
        maps = query_maps(pool, tokens, pl_module.features.spec(tuple(images.shape[-2:])))
        mean, std = _normalization(dm.val_transform)
        path = Path(trainer.default_root_dir) / self.dirname / f"epoch{trainer.current_epoch:03d}.png"
        render_attention_maps(images * std + mean, maps, path, self.max_queries, f"{type(pool).__name__}, epoch {trainer.current_epoch}")
        self.saved.append(path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="probe/attention_maps", images=[str(path)], step=trainer.global_step)
        log.info("attention maps: %s", path)
