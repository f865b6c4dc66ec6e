"""Encoder -> [neck] -> decode head [+ auxiliary head]: mmseg's ``EncoderDecoder`` in plain torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tasks.segmentation.conv_module import resize
from tasks.segmentation.encoder import ViTMultiLevel

EPS = torch.finfo(torch.float32).eps


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, avg_non_ignore: bool, align_corners: bool = False
) -> torch.Tensor:
    """mmseg ``CrossEntropyLoss`` on logits bilinearly resized to the labels.

    ``avg_non_ignore=False`` is mmseg's default (and the BEiT/MAE/iBOT recipes'): the per-pixel losses
    are averaged over *all* pixels, ignored ones counting as 0; ``True`` averages over labelled
    pixels only, as ``torch.nn.functional.cross_entropy`` does.
    """
    logits = resize(logits, labels.shape[-2:], align_corners)
    per_pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    if not avg_non_ignore:
        return per_pixel.mean()
    return per_pixel.sum() / ((labels != ignore_index).sum() + EPS)


def pixel_accuracy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Top-1 accuracy (%) over labelled pixels (mmseg's ``acc_seg``)."""
    pred = resize(logits, labels.shape[-2:]).argmax(1)
    valid = labels != ignore_index
    return (pred[valid] == labels[valid]).float().mean() * 100 if valid.any() else logits.new_zeros(())


class Segmentor(nn.Module):
    """Config keys (``model.segmentor``): ``encoder`` (``ViTMultiLevel``), ``neck`` (null for the
    linear head), ``decode_head``, ``auxiliary_head`` (null: none), ``aux_weight`` (0.4 in UperNet
    recipes), ``ignore_index``, ``avg_non_ignore`` (see ``segmentation_loss``), ``align_corners``."""

    def __init__(
        self,
        encoder: ViTMultiLevel,
        neck: nn.Module | None,
        decode_head: nn.Module,
        auxiliary_head: nn.Module | None,
        aux_weight: float,
        ignore_index: int,
        avg_non_ignore: bool,
        align_corners: bool,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore
        self.align_corners = align_corners

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(images)
        return self.neck(features) if self.neck is not None else features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Decode-head logits at the head's stride (``[B, classes, h, w]``)."""
        return self.decode_head(self.features(images))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits resized to the input (mmseg ``encode_decode``)."""
        return resize(self(images), images.shape[-2:], self.align_corners)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss", "loss_decode", "loss_aux" (if any), "acc"}`` of a batch of crops and label maps."""
        features = self.features(images)
        logits = self.decode_head(features)
        out = {"loss_decode": segmentation_loss(logits, labels, self.ignore_index, self.avg_non_ignore, self.align_corners)}
        loss = out["loss_decode"]
        if self.auxiliary_head is not None:
            aux = self.auxiliary_head(features)
            out["loss_aux"] = self.aux_weight * segmentation_loss(
                aux, labels, self.ignore_index, self.avg_non_ignore, self.align_corners
            )
            loss = loss + out["loss_aux"]
        out["loss"] = loss
        out["acc"] = pixel_accuracy(logits.detach(), labels, self.ignore_index)
        return out
