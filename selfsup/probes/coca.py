"""CoCa attentional pooler (lucidrains ``CrossAttention``, as ``poolings/coca_pytorch.py``).

``num_queries`` learned queries (``randn``, std 1) pass a LayerNorm with a learned gain and a fixed
zero bias, then ``heads`` query heads of ``dim_head`` attend against ONE shared key/value head of
``dim_head`` (multi-query attention); ``to_out`` maps back to D; no biases. The probe returns the
first query's output only, so only that query is computed: the others do not influence it (every
query attends independently and the LayerNorm is per query) and keep a zero gradient either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BiasFreeLayerNorm(nn.Module):
    """LayerNorm with a learned gain and a zero bias buffer (the official ``gamma`` / ``beta`` keys)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class CoCaPooling(nn.Module):
    """Config keys (``configs/probe/coca.yaml``): ``dim``, ``num_queries`` (196), ``heads`` (8),
    ``dim_head`` (64), ``norm_context``."""

    def __init__(self, dim: int, num_queries: int = 196, heads: int = 8, dim_head: int = 64, norm_context: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        self.out_dim = dim
        self.norm = BiasFreeLayerNorm(dim)
        self.context_norm = BiasFreeLayerNorm(dim) if norm_context else nn.Identity()
        self.img_queries = nn.Parameter(torch.randn(num_queries, dim))
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q = self.to_q(self.norm(self.img_queries[:1])).view(self.heads, -1) * self.scale  # [h, dh], query 0
        k, v = self.to_kv(self.context_norm(x)).chunk(2, dim=-1)  # [B, N, dh] each, shared by the heads
        attn = torch.einsum("hd,bnd->bhn", q, k).softmax(dim=-1)
        return self.to_out(torch.einsum("bhn,bnd->bhd", attn, v).reshape(b, -1))
