"""CAE attentive block (``poolings/cae_att.py``): one cross-attention from a learned query, no residual.

A zero-initialised query; separate LayerNorms (eps 1e-5) for query, keys and values; q, k, v Linear
without bias; ``proj`` with bias; ``heads`` heads. ``norm2_cross`` is built but unused, as in the
official module (it counts in the parameters and state dict).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_scale: float | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, d = k.shape
        h = self.num_heads
        q = self.q(q).view(b, 1, h, d // h).transpose(1, 2)
        k = self.k(k).view(b, n, h, d // h).transpose(1, 2)
        v = self.v(v).view(b, n, h, d // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, d))


class CAEAttentiveBlock(nn.Module):
    """Config keys (``configs/probe/cae.yaml``): ``dim``, ``num_heads`` (8), ``qk_scale``."""

    def __init__(self, dim: int, num_heads: int = 8, qk_scale: float | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"probe.num_heads={num_heads} does not divide the feature width {dim}")
        self.out_dim = dim
        self.query_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm1_q = nn.LayerNorm(dim)
        self.norm1_k = nn.LayerNorm(dim)
        self.norm1_v = nn.LayerNorm(dim)
        self.norm2_cross = nn.LayerNorm(dim)  # unused, as in the official module
        self.cross_attn = CrossAttention(dim, num_heads, qk_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.norm1_q(self.query_token.expand(x.shape[0], -1, -1))
        return self.cross_attn(q, self.norm1_k(x), self.norm1_v(x))
