"""Coloured overlays of predictions next to the ground truth, for a few validation images."""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

from tasks.segmentation.conv_module import resize

log = logging.getLogger("selfsup")


def palette(num_classes: int) -> np.ndarray:
    """``uint8 [num_classes, 3]``: well separated hues (golden-ratio steps), two brightness levels."""
    colours = [
        colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 1.0 if i % 2 == 0 else 0.7) for i in range(num_classes)
    ]
    return (np.array(colours) * 255).round().astype(np.uint8)


def colourise(labels: np.ndarray, colours: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb [H,W,3], valid [H,W])`` of a class map; ignored pixels are black and not valid."""
    valid = (labels != ignore_index) & (labels >= 0) & (labels < len(colours))
    rgb = np.zeros((*labels.shape, 3), np.uint8)
    rgb[valid] = colours[labels[valid]]
    return rgb, valid


def overlay_panel(
    image: np.ndarray, label: np.ndarray, pred: np.ndarray, colours: np.ndarray, ignore_index: int, alpha: float
) -> np.ndarray:
    """``[image | ground truth over image | prediction over image]`` side by side, 4 px white gaps."""

    def blend(classes: np.ndarray) -> np.ndarray:
        rgb, valid = colourise(classes, colours, ignore_index)
        out = image.astype(np.float32)
        out[valid] = (1 - alpha) * out[valid] + alpha * rgb[valid]
        return out.round().astype(np.uint8)

    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, blend(label), gap, blend(pred)], axis=1)


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """Normalised ``[3,h,w]`` -> ``uint8 [H,W,3]`` at ``size`` (the annotation's)."""
    image = resize(image[None].float(), tuple(size))[0]
    image = image * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


class SegmentationOverlays(L.Callback):
    """Writes ``<dirpath>/step<N>/<name>.png`` for the first ``num_images`` validation images of every
    validation: the image, the ground truth and the prediction in the class colours (ignored pixels
    uncoloured), and ``<dirpath>/legend.png`` once.

    Config keys (``callbacks.overlays``): ``dirpath``, ``num_images``, ``alpha``, ``mean``, ``std``
    (the normalisation of the validation images). Ignored pixels are the module's ``ignore_index``.
    """

    def __init__(self, dirpath: str, num_images: int, alpha: float, mean: Sequence[float], std: Sequence[float]) -> None:
        self.dirpath = Path(dirpath)
        self.num_images = num_images
        self.alpha = alpha
        self.mean, self.std = list(mean), list(std)
        self._written = 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._written = 0

    def _name(self, trainer: L.Trainer, index: int) -> str:
        namer = getattr(trainer.datamodule, "sample_name", None)
        return namer(index) if namer is not None else f"{index:06d}"

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or self._written >= self.num_images:
            return
        colours = palette(pl_module.num_classes)
        folder = self.dirpath / f"step{trainer.global_step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        for image, label, pred, index in zip(outputs["images"], outputs["labels"], outputs["preds"], outputs["indices"]):
            if self._written >= self.num_images:
                break
            label_np, pred_np = label.cpu().numpy(), pred.cpu().numpy()
            rgb = denormalize(image.cpu(), self.mean, self.std, label_np.shape)
            panel = overlay_panel(rgb, label_np, pred_np, colours, pl_module.ignore_index, self.alpha)
            Image.fromarray(panel).save(folder / f"{self._name(trainer, index)}.png")
            self._written += 1
        legend = self.dirpath / "legend.png"
        if not legend.exists():
            self._write_legend(legend, pl_module.class_names, colours)
        if self._written >= self.num_images:
            log.info("segmentation overlays written to %s", folder)

    @staticmethod
    def _write_legend(path: Path, names: list[str], colours: np.ndarray) -> None:
        row = 14
        canvas = Image.new("RGB", (220, row * len(names) + 4), "white")
        draw = ImageDraw.Draw(canvas)
        for i, (name, colour) in enumerate(zip(names, colours)):
            draw.rectangle([2, 2 + i * row, 14, 12 + i * row], fill=tuple(int(c) for c in colour))
            draw.text((20, 2 + i * row), f"{i} {name}", fill="black")
        canvas.save(path)
