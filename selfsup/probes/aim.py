"""AIM attentive probe (apple/ml-aim ``AttentionPoolingClassifier``, as ``poolings/aim.py``): MHCA + BN.

Tokens are batch-normalised channel-wise (non-affine, eps 1e-6, statistics over B x N); learned
queries (no W_q) attend through per-head slices of ``W_k x`` and aggregate ``W_v x``; heads are
concatenated and the queries averaged. No output projection (spec 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentionPoolingClassifier(nn.Module):
    """Config keys (``configs/probe/aim.yaml``): ``dim``, ``num_heads`` (official probe default 16),
    ``num_queries``, ``qkv_bias``, ``qk_scale`` (null: (D/heads)^-0.5)."""

    def __init__(
        self, dim: int, num_heads: int = 16, num_queries: int = 1, qkv_bias: bool = False, qk_scale: float | None = None
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"probe.num_heads={num_heads} does not divide the feature width {dim}")
        self.num_heads = num_heads
        self.num_queries = num_queries
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.out_dim = dim
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.cls_token = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, d = x.shape
        x = self.bn(x.transpose(1, 2)).transpose(1, 2)
        q = self._heads(self.cls_token.expand(b, -1, -1))
        out = F.scaled_dot_product_attention(q, self._heads(self.k(x)), self._heads(self.v(x)), scale=self.scale)
        return out.transpose(1, 2).reshape(b, self.num_queries, d).mean(dim=1)
