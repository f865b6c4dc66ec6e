"""V-JEPA attentive pooler (facebookresearch/jepa ``AttentivePooler``; spec 10).

``q <- q + CrossAttention(q, LN(x))``, ``q <- q + MLP(LN(q))`` (the query itself is not normalised),
then ``depth - 1`` self-attention blocks on the queries (several queries are averaged; the official
pooler is used with one). Init: every Linear trunc-normal(0.02)
with zero bias, LayerNorm (1, 0), ``xattn.proj`` and ``mlp.fc2`` divided by sqrt(2); the query
trunc-normal(0.02).

``output_projection``: upstream jepa HEAD constructs ``xattn.proj`` but does not apply it (PR #17
added it, reverted 2025-02-27); the efficient-probing copy applies it. Parameter counts are equal
either way; ``true`` = the efficient-probing copy, ``false`` = upstream jepa.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, output_projection: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.output_projection = output_projection
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _half(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Keys (``i=0``) or values (``i=1``): rows ``[i D, (i+1) D)`` of ``kv``. Upstream's single ``kv``
        Linear followed by an unbind computes the same products, but its backward stacks the key and
        value gradients into one ``[B, N, 2, H, D/H]`` copy (~6% of a ViT-B probe step on CPU)."""
        d = self.kv.weight.shape[1]
        bias = None if self.kv.bias is None else self.kv.bias[i * d : (i + 1) * d]
        return F.linear(x, self.kv.weight[i * d : (i + 1) * d], bias)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, n, d = q.shape
        h = self.num_heads
        q = self.q(q).view(b, n, h, d // h).transpose(1, 2)
        k, v = (self._half(x, i).view(b, x.shape[1], h, d // h).transpose(1, 2) for i in (0, 1))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out) if self.output_projection else out


class CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, output_projection: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias, output_projection)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class SelfAttentionBlock(nn.Module):
    """jepa ``modules.Block``: pre-norm self-attention (SDPA) + MLP, on the queries."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = x + self.attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class AttentivePooler(nn.Module):
    """Config keys (``configs/probe/vjepa.yaml``): ``dim``, ``num_queries``, ``num_heads`` (efficient-probing
    default 16; upstream V-JEPA uses the encoder's), ``mlp_ratio``, ``depth``, ``qkv_bias``, ``init_std``,
    ``output_projection``."""

    def __init__(
        self,
        dim: int,
        num_queries: int = 1,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        depth: int = 1,
        qkv_bias: bool = True,
        init_std: float = 0.02,
        output_projection: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"probe.num_heads={num_heads} does not divide the feature width {dim}")
        self.out_dim = dim
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.cross_attention_block = CrossAttentionBlock(dim, num_heads, mlp_ratio, qkv_bias, output_projection)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth - 1))
        self._init(init_std)

    @torch.no_grad()
    def _init(self, std: float) -> None:
        nn.init.trunc_normal_(self.query_tokens, std=std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.cross_attention_block.xattn.proj.weight.div_(math.sqrt(2.0))
        self.cross_attention_block.mlp.fc2.weight.div_(math.sqrt(2.0))
        for layer_id, block in enumerate(self.blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * (layer_id + 1)))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * (layer_id + 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.cross_attention_block(self.query_tokens.expand(x.shape[0], -1, -1), x)
        for block in self.blocks:
            q = block(q)
        return q.mean(dim=1) if q.shape[1] > 1 else q[:, 0]
