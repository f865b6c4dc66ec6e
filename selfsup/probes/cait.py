"""CaiT class-attention pooling (``CAPooling`` of ``poolings/other_pool.py``, after DeiT's CaiT).

A learned class token (trunc-normal 0.02) is refined by ``depth`` LayerScale class-attention blocks:
``u = [cls; x]``, ``cls <- cls + g1 * CA(LN(u))`` (q from cls only, k and v over u), then
``cls <- cls + g2 * MLP(LN(cls))``; LN eps 1e-6, LayerScale init 1e-5. A final LayerNorm (eps 1e-5)
is applied to the class token (the official code normalises ``[cls; x]`` and keeps row 0:
LayerNorm is per token, so this is the same number).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


class ClassAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_scale: float | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        b, n, d = u.shape
        h = self.num_heads
        q = self.q(u[:, :1]).view(b, 1, h, d // h).transpose(1, 2)
        k = self.k(u).view(b, n, h, d // h).transpose(1, 2)
        v = self.v(u).view(b, n, h, d // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, 1, d))


class ClassAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, qk_scale: float | None, init_scale: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, qk_scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1 = nn.Parameter(init_scale * torch.ones(dim))
        self.gamma_2 = nn.Parameter(init_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        cls = cls + self.gamma_1 * self.attn(self.norm1(torch.cat([cls, x], dim=1)))
        return cls + self.gamma_2 * self.mlp(self.norm2(cls))


class ClassAttentionPooling(nn.Module):
    """Config keys (``configs/probe/cait.yaml``): ``dim``, ``num_heads`` (4), ``depth`` (1), ``qkv_bias``,
    ``qk_scale``, ``mlp_ratio``, ``init_scale`` (LayerScale init)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        depth: int = 1,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        mlp_ratio: float = 4.0,
        init_scale: float = 1e-5,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"probe.num_heads={num_heads} does not divide the feature width {dim}")
        self.out_dim = dim
        self.blocks_token_only = nn.ModuleList(
            ClassAttentionBlock(dim, num_heads, mlp_ratio, qkv_bias, qk_scale, init_scale) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.blocks_token_only:
            cls = block(x, cls)
        return self.norm(cls[:, 0])
