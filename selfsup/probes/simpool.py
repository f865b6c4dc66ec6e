"""SimPool (Psomas et al. 2023; ``poolings/simpool.py``): attention with a GAP query.

Query = ``W_q`` of the mean of the raw tokens; keys = ``W_k LN(x)``; values = ``LN(x)`` (no value
projection); softmax over tokens with scale (D/heads)^-0.5; LN eps 1e-6. With ``gamma`` the pooling
is the generalised mean ``(attn @ (v - min v + eps)^gamma)^(1/gamma)`` (``use_beta`` adds a learned
offset); the probe uses ``gamma: null`` (plain weighted mean), as the official head.
"""

from __future__ import annotations

import torch
from torch import nn


class SimPool(nn.Module):
    """Config keys (``configs/probe/simpool.yaml``): ``dim``, ``num_heads``, ``qkv_bias``, ``qk_scale``,
    ``gamma``, ``use_beta``."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        gamma: float | None = None,
        use_beta: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"probe.num_heads={num_heads} does not divide the feature width {dim}")
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.gamma = gamma
        self.out_dim = dim
        self.norm_patches = nn.LayerNorm(dim, eps=1e-6)
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.beta = nn.Parameter(torch.zeros(1)) if gamma is not None and use_beta else None

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, d = x.shape
        q = self._heads(self.wq(x.mean(dim=1, keepdim=True)))
        normed = self.norm_patches(x)
        v = self._heads(normed)
        attn = ((q @ self._heads(self.wk(normed)).transpose(-2, -1)) * self.scale).softmax(dim=-1)
        if self.gamma is None:
            out = attn @ v
        else:
            out = (attn @ (v - v.min() + 1e-6).pow(self.gamma)).pow(1.0 / self.gamma)
            if self.beta is not None:
                out = out + self.beta
        return out.transpose(1, 2).reshape(b, d)
