"""The pictures of ``tools/visualize.py``, made during pretraining every ``every_n_epochs`` epochs.

At the end of such an epoch, on rank 0, for ``num_images`` fixed validation images: the masks of the
run's sampler (two draws over each image, frequency maps over ``draws`` images), the last-block
attention of the target encoder, and the PCA picture of its patch features. Each is written as
``<dirpath>/<kind>/epoch<NNN>.png`` (so a CSV-only run has them too) and sent to every image-capable
logger: wandb (``log_image``) and TensorBoard (``add_image``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from selfsup.viz.attention import EncoderAttention
from selfsup.viz.canvas import save_png
from selfsup.viz.figures import attention_figure, masks_figure, pca_figure
from selfsup.viz.images import sample_images

KINDS = ("masks", "attention", "pca")


def log_picture(trainer: L.Trainer, key: str, picture: np.ndarray, step: int) -> None:
    """Send ``uint8 [H, W, 3]`` to every logger that takes images."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[picture], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, picture, global_step=step, dataformats="HWC")


class TrainingPictures(L.Callback):
    """Config keys (``configs/callbacks/pretrain.yaml`` ``pictures``): ``every_n_epochs`` (0 = never),
    ``kinds`` (any of masks, attention, pca), ``num_images``, ``panel`` (pixels per panel), ``draws``
    (images drawn for the mask frequency maps), ``dirpath`` (where PNGs are written)."""

    def __init__(
        self, every_n_epochs: int, kinds: list[str], num_images: int, panel: int, draws: int, dirpath: str
    ) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"callbacks.pictures.kinds has {unknown}; valid: {', '.join(KINDS)}")
        self.every_n_epochs, self.kinds = every_n_epochs, list(kinds)
        self.num_images, self.panel, self.draws = num_images, panel, draws
        self.dirpath = Path(dirpath)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.every_n_epochs <= 0 or (epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        for kind, picture in self.render(trainer.datamodule, pl_module.objective.target_encoder, epoch).items():
            save_png(picture, self.dirpath / kind / f"epoch{epoch:03d}.png")
            log_picture(trainer, f"pictures/{kind}", picture, trainer.global_step)

    def render(self, datamodule: L.LightningDataModule, encoder: torch.nn.Module, epoch: int) -> dict[str, np.ndarray]:
        images, pictures = sample_images(datamodule, self.num_images)
        images = images.to(next(encoder.parameters()).device)
        out: dict[str, np.ndarray] = {}
        if "masks" in self.kinds and datamodule.mask_sampler is not None:
            sampler = datamodule.mask_sampler
            out["masks"] = masks_figure(pictures, {sampler.mode: sampler}, self.draws, self.panel, seed=epoch)
        grid = encoder.grid_for(*images.shape[-2:])
        was_training = encoder.training
        encoder.eval()
        try:
            if "attention" in self.kinds:
                out["attention"] = attention_figure(images, pictures, {"target": EncoderAttention(encoder)}, grid, self.panel)
            if "pca" in self.kinds:
                with torch.no_grad():
                    tokens = encoder.forward_tokens(images)
                out["pca"] = pca_figure(pictures, {"target encoder": tokens}, grid, self.panel)
        finally:
            encoder.train(was_training)
        return out
