"""Attention maps over the input image.

An *attention source* turns images into maps over the patch grid: ``attention_maps(images) ->
(maps [B, M, N], titles)``. Two sources:

- ``EncoderAttention``: the encoder's last block. With no class token there is no single query,
  so each map is the attention every patch *receives*, averaged over all query patches (the mean
  over heads first, then single heads).
- ``QueryProbeAttention``: a probe with learned queries (EP, attentive poolers) on top of the
  encoder. The probe is any ``nn.Module`` with ``attention_maps(tokens [B, N, D]) -> [B, Q, N]``
  (the name of ``selfsup/probes``: EP, AbMILP, DOLG) or ``attention_weights`` (the same: the softmax
  weights of its queries over the tokens); one map per query. It reads ``encoder.forward_tokens``
  (after the final norm); a trained probe checkpoint is drawn on its own features (blocks, norm)
  by ``tools/visualize.py attention checkpoint=<probe .ckpt>`` (``selfsup/viz/probe.py``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

from selfsup.models.vit import JEPAViT
from selfsup.viz.canvas import blend, colorize, upsample


class AttentionSource(Protocol):
    def attention_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, list[str]]: ...


def last_block_attention(encoder: JEPAViT, images: torch.Tensor) -> torch.Tensor:
    """Softmax attention of the encoder's last block, ``[B, heads, N, N]`` (query x key), computed
    from that block's input exactly as timm's ``Attention`` does (qkv, q/k norms, scale)."""
    attn = encoder.blocks[-1].attn
    captured: dict[str, torch.Tensor] = {}
    hook = attn.register_forward_pre_hook(lambda module, args: captured.__setitem__("x", args[0]))
    try:
        with torch.no_grad():
            encoder.forward_tokens(images)
            x = captured["x"]
            b, n, _ = x.shape
            qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
            return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    finally:
        hook.remove()


class EncoderAttention:
    """Maps of the encoder's last block: the mean over heads, then the first ``max_maps - 1`` heads."""

    def __init__(self, encoder: JEPAViT, max_maps: int = 4) -> None:
        self.encoder, self.max_maps = encoder, max_maps

    def attention_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        received = last_block_attention(self.encoder, images).mean(dim=2)  # [B, heads, N]
        maps = torch.cat([received.mean(dim=1, keepdim=True), received], dim=1)[:, : self.max_maps]
        return maps, ["mean of heads"] + [f"head {h}" for h in range(maps.shape[1] - 1)]


class QueryProbeAttention:
    """Maps of a probe's queries over the encoder's tokens (see the module docstring)."""

    METHODS = ("attention_maps", "attention_weights")

    def __init__(self, encoder: JEPAViT, probe: nn.Module, max_maps: int = 4) -> None:
        found = [m for m in self.METHODS if callable(getattr(probe, m, None))]
        if not found:
            raise TypeError(f"{type(probe).__name__} has no attention_maps(tokens) -> [B, Q, N] method")
        self.encoder, self.max_maps = encoder, max_maps
        self.weights = getattr(probe, found[0])

    def attention_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        with torch.no_grad():
            maps = self.weights(self.encoder.forward_tokens(images))[:, : self.max_maps]
        return maps, [f"query {q}" for q in range(maps.shape[1])]


def attention_panels(image: np.ndarray, maps: torch.Tensor, grid: tuple[int, int]) -> list[np.ndarray]:
    """Each map ``[N]`` of one image as a heat map blended over it (min-max per map)."""
    height, width = image.shape[:2]
    panels = []
    for m in maps.float().cpu().numpy():
        heat = upsample(colorize(m.reshape(grid), "inferno"), height, width)
        panels.append(blend(image, heat, 0.65))
    return panels
