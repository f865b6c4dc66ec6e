"""Attention-based MIL pooling (AbMILP; ``poolings/abmilp.py``, from gmum/beyond_cls).

An MLP ``Linear(D,D)-tanh-...-Linear(D,1)`` scores each token, softmax over tokens, weighted sum.
``self_attention``: ``none`` = plain AbMILP (scores and pools the raw tokens; the paper's "M=1,
W_K = W_V = identity"); ``map`` = scores computed on one-head self-attended tokens; ``both``
(the official default) = scores on and pooling of the self-attended tokens. The self-attention is
``qkv`` Linear(D, 3D) without bias and ``proj`` Linear(D, D) with bias, scale D^-0.5.
``cond: pe`` adds a fixed 2-D sin-cos position embedding to the scorer's input (one zero row for the
class token unless ``content: patch``); ``content: patch`` drops the first (class) token.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.models.pos_embed import sincos_2d

SELF_ATTENTION = ("none", "map", "both")


class OneHeadSelfAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v)


class ABMILPHead(nn.Module):
    """Config keys (``configs/probe/abmilp.yaml``): ``dim``, ``self_attention`` (none | map | both),
    ``activation`` (tanh | relu), ``depth`` (layers of the scorer), ``cond`` (none | pe), ``content``
    (all | patch), ``grid`` (set from the features; used by ``cond: pe``)."""

    def __init__(
        self,
        dim: int,
        self_attention: str = "both",
        activation: str = "tanh",
        depth: int = 2,
        cond: str = "none",
        content: str = "all",
        grid: tuple[int, int] | list[int] | None = None,
    ) -> None:
        super().__init__()
        if self_attention not in SELF_ATTENTION:
            raise ValueError(f"probe.self_attention={self_attention!r}; valid: {', '.join(SELF_ATTENTION)}")
        if activation not in ("tanh", "relu") or cond not in ("none", "pe") or content not in ("all", "patch"):
            raise ValueError(f"probe: activation={activation!r} (tanh|relu), cond={cond!r} (none|pe), content={content!r} (all|patch)")
        self.self_attention = self_attention
        self.content = content
        self.out_dim = dim
        self.pos_embed: torch.Tensor | None = None
        if cond == "pe":
            if grid is None:
                raise ValueError("probe.cond=pe needs the token grid (set from the features)")
            table = sincos_2d(dim, tuple(grid))
            if content != "patch":
                table = torch.cat([torch.zeros(1, dim), table])
            self.register_buffer("pos_embed", table.unsqueeze(0))  # official key: pos_embed (frozen)
        self.self_attn = OneHeadSelfAttention(dim) if self_attention != "none" else nn.Identity()
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.Linear(dim, dim), nn.Tanh() if activation == "tanh" else nn.ReLU()]
        layers.append(nn.Linear(dim, 1))
        self.attention_predictor = nn.Sequential(*layers)

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[1].transpose(1, 2)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.content == "patch":
            x = x[:, 1:]
        attended = self.self_attn(x)
        scorer_input = attended if self.self_attention in ("map", "both") else x
        if self.pos_embed is not None:
            if self.pos_embed.shape[1] != x.shape[1]:
                raise ValueError(f"probe.cond=pe: {self.pos_embed.shape[1]} position rows for {x.shape[1]} tokens")
            scorer_input = scorer_input + self.pos_embed
        attn = self.attention_predictor(scorer_input).softmax(dim=1)  # [B, N, 1]
        pooled = attended if self.self_attention == "both" else x
        return (pooled * attn).sum(dim=1), attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]
