"""Frozen backbone features for probes: which block(s), final norm or not, class token or not.

``FrozenFeatures`` wraps any timm ``VisionTransformer`` (our ``JEPAViT`` included), freezes it
(``requires_grad=False``, always in eval mode) and runs timm's ``forward_intermediates``, stopping
after the last block it needs:

- ``blocks``: block indices, 0-based (the official ``--return_block``) or negative from the end;
  several blocks are concatenated along channels in block order (``[-4, -3, -2, -1]`` = the last
  four). ``[-1]`` is the usual last-block probe.
- ``final_norm``: apply the backbone's final LayerNorm to each block's tokens. The efficient-probing
  code feeds MAE-family ViTs (and I-JEPA through ``models_vit``) *without* it; V-JEPA and DINOv2
  apply it.
- ``tokens``: ``patch`` (patch tokens only) or ``all`` (the class token first, then the patches:
  the official ``<probe>_all``). Register tokens are always dropped.
- ``output``: ``tokens`` -> ``{"tokens": [B, T, C]}`` for attentive probes; ``pooled`` ->
  ``{"mean": [B, k, D]}`` (patch-token mean of each block) plus ``{"cls": [B, k, D]}`` when the
  backbone has a class token: all a linear grid or kNN needs, and small enough to cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

TOKENS = ("patch", "all")
OUTPUTS = ("tokens", "pooled")


@dataclass(frozen=True)
class FeatureSpec:
    """What the heads are built for: channel width, patch grid, prefix tokens in ``tokens``."""

    dim: int
    grid: tuple[int, int]
    num_prefix_tokens: int
    num_blocks: int
    has_class_token: bool


def has_class_token(backbone: nn.Module) -> bool:
    return getattr(backbone, "cls_token", None) is not None


class FrozenFeatures(nn.Module):
    """Config keys (``model.features``): ``backbone``, ``blocks``, ``final_norm``, ``tokens``, ``output``."""

    def __init__(
        self, backbone: nn.Module, blocks: list[int], final_norm: bool, tokens: str = "patch", output: str = "tokens"
    ) -> None:
        super().__init__()
        if tokens not in TOKENS:
            raise ValueError(f"features.tokens={tokens!r}; valid: {', '.join(TOKENS)}")
        if output not in OUTPUTS:
            raise ValueError(f"features.output={output!r}; valid: {', '.join(OUTPUTS)}")
        depth = len(backbone.blocks)
        self.indices = sorted({b + depth if b < 0 else b for b in blocks})
        if not self.indices or self.indices[0] < 0 or self.indices[-1] >= depth:
            raise ValueError(f"features.blocks={list(blocks)}: the backbone has blocks 0..{depth - 1} (or -1..-{depth})")
        if tokens == "all" and not has_class_token(backbone):
            raise ValueError("features.tokens=all needs a backbone with a class token (JEPA ViTs have none): use tokens=patch")
        self.backbone = backbone.requires_grad_(False).eval()
        self.final_norm = final_norm
        self.tokens = tokens
        self.output = output

    def train(self, mode: bool = True) -> FrozenFeatures:
        super().train(mode)
        self.backbone.eval()  # frozen: dropout / drop-path stay off
        return self

    def spec(self, image_size: int | tuple[int, int]) -> FeatureSpec:
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        grid = tuple(int(g) for g in self.backbone.patch_embed.dynamic_feat_size(hw))
        k = len(self.indices)
        prefix = 1 if self.tokens == "all" else 0
        return FeatureSpec(self.backbone.embed_dim * k, grid, prefix, k, has_class_token(self.backbone))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.backbone.forward_intermediates(
            images, indices=self.indices, norm=self.final_norm, stop_early=True, output_fmt="NLC",
            intermediates_only=True, return_prefix_tokens=True,
        )
        patches = [o[0] if isinstance(o, tuple) else o for o in outs]
        cls = [o[1][:, :1] for o in outs] if has_class_token(self.backbone) else None
        if self.output == "pooled":
            pooled = {"mean": torch.stack([p.mean(dim=1) for p in patches], dim=1)}
            if cls is not None:
                pooled["cls"] = torch.cat(cls, dim=1)
            return pooled
        tokens = torch.cat(patches, dim=-1)
        if self.tokens == "all":
            tokens = torch.cat([torch.cat(cls, dim=-1), tokens], dim=1)
        return {"tokens": tokens}
