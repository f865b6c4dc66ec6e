"""Multi-level features of a ViT for dense heads, with a frozen, partially frozen or trained backbone."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.models.vit import JEPAViT


class ViTMultiLevel(nn.Module):
    """``images [B,3,H,W] -> [ [B,D,H/p,W/p] for each block in out_indices ]`` via timm's
    ``forward_intermediates`` (the raw block outputs, as BEiT/MAE/iBOT's segmentation backbones; no
    final norm unless ``norm``). Any input size that is a multiple of the patch size works: the
    sin-cos position table is re-derived for the grid.

    ``frozen_stages`` follows iBOT's segmentation backbone: -1 trains everything; ``k >= 0`` freezes
    the patch embedding and the first ``k`` blocks (``k = depth`` also the final norm), which are
    kept in eval mode (no drop-path) and excluded from the optimiser. A fully frozen backbone runs
    under ``torch.no_grad``.

    Config keys (``model.segmentor.encoder``): ``backbone``, ``out_indices``, ``frozen_stages``, ``norm``.
    """

    def __init__(self, backbone: JEPAViT, out_indices: list[int], frozen_stages: int, norm: bool) -> None:
        super().__init__()
        depth = len(backbone.blocks)
        bad = [i for i in out_indices if not 0 <= i < depth]
        if bad or not out_indices or list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f"encoder.out_indices={list(out_indices)} must be increasing block indices in [0, {depth})")
        if not -1 <= frozen_stages <= depth:
            raise ValueError(f"encoder.frozen_stages={frozen_stages} must be in [-1, {depth}] (-1: train all)")
        self.backbone = backbone
        self.out_indices = list(out_indices)
        self.frozen_stages = frozen_stages
        self.norm = norm
        for module in self._frozen_modules():
            module.requires_grad_(False)
        self.train()

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    @property
    def depth(self) -> int:
        return len(self.backbone.blocks)

    @property
    def fully_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        frozen = [self.backbone.patch_embed, self.backbone.norm_pre, *self.backbone.blocks[: self.frozen_stages]]
        if self.frozen_stages == self.depth:
            frozen.append(self.backbone.norm)
        return frozen

    def train(self, mode: bool = True) -> ViTMultiLevel:
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.backbone.grid_for(images.shape[-2], images.shape[-1])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.fully_frozen):
            return self.backbone.forward_intermediates(
                images, indices=self.out_indices, norm=self.norm, stop_early=True,
                output_fmt="NCHW", intermediates_only=True,
            )
