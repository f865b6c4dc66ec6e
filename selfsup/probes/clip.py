"""CLIP attention pooling (``AttentionPool2d``, timm-derived, as ``poolings/clip/attention_pool2d.py``).

LayerNorm (eps 1e-6) on the tokens, the token mean prepended, a learned position embedding of
``grid + 1`` rows added (trunc-normal std D^-0.5), ``qkv`` Linear(D, 3D) (weights trunc-normal std
D^-0.5, zero bias), ``heads``-head self-attention over the N+1 tokens, ``proj``; the output of the
prepended mean token is returned (only its query is computed: the other rows are discarded). The
position embedding ties the probe to one token grid (14x14 for ViT-B/16 at 224 px).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentionPool2d(nn.Module):
    """Config keys (``configs/probe/clip.yaml``): ``dim``, ``num_heads`` (4), ``qkv_bias``, ``grid`` (set from
    the features)."""

    def __init__(self, dim: int, num_heads: int = 4, qkv_bias: bool = True, grid: tuple[int, int] | list[int] | None = None) -> None:
        super().__init__()
        if grid is None:
            raise ValueError("the CLIP pooling needs the token grid (set from the features)")
        if dim % num_heads:
            raise ValueError(f"probe.num_heads={num_heads} does not divide the feature width {dim}")
        self.num_heads = num_heads
        self.out_dim = dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos_embed = nn.Parameter(torch.zeros(grid[0] * grid[1] + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=dim**-0.5)
        nn.init.trunc_normal_(self.qkv.weight, std=dim**-0.5)
        if self.qkv.bias is not None:
            nn.init.zeros_(self.qkv.bias)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        if n + 1 != self.pos_embed.shape[0]:
            raise ValueError(f"the CLIP pooling was built for {self.pos_embed.shape[0] - 1} tokens, got {n} (features.tokens=patch, same resolution)")
        x = self.norm(x)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.pos_embed
        h = self.num_heads
        q = F.linear(x[:, :1], self.qkv.weight[:d], None if self.qkv.bias is None else self.qkv.bias[:d])
        k, v = F.linear(x, self.qkv.weight[d:], None if self.qkv.bias is None else self.qkv.bias[d:]).chunk(2, dim=-1)
        q = q.view(b, 1, h, d // h).transpose(1, 2)
        k, v = (t.view(b, n + 1, h, d // h).transpose(1, 2) for t in (k, v))
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, d))
