"""DMT-JEPA's local aggregation head (official ``LocalAggHead``, spec b.1), used in two modes.

``num_blocks`` (2) CaiT-style class-attention blocks at the encoder width and heads (separate ``q``,
``k``, ``v`` and ``proj`` Linears with bias, MLP x4 with exact GELU, LayerNorms eps 1e-6, no
layer-scale despite the official class name ``LayerScale_Block_CA``), then a final LayerNorm.
Parameter names are the official ones: ``cls_blocks.{i}.{norm1,attn.{q,k,v,proj},norm2,mlp.{fc1,fc2}}``
and ``norm``. Init: Linear weights trunc-normal(0.02, truncated at +-2), biases 0, LayerNorm (1, 0).

- **global** (context head, trained; ``loc=False`` in the official code): each block computes the
  mean ``c`` of its input tokens; ``attention="cross"``: one query ``c`` attends over ``[c, tokens]``
  and the result is broadcast-added to every token; ``"self"``: plain self-attention over the tokens
  (no mean token). Then a per-token MLP; after the blocks the final norm. Length is preserved.
- **local** (target head, EMA; ``loc=True``): per row, a query token ``[1, D]`` and its neighbour
  tokens ``[k, D]``; each block updates the query only: ``u = [q, neighbours]``, ``q += CA(norm1(u))``
  (``"self"``: every token of ``u`` queries, the first output row is kept, as the official code --
  mathematically the same as ``"cross"``), ``q += mlp(norm2(q))``; then the final norm. The
  neighbours are the same raw tokens in every block.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from selfsup.models.init import official_init_

ATTENTIONS = ("cross", "self")


def check_attention(name: str, key: str) -> None:
    if name not in ATTENTIONS:
        raise ValueError(f"{key}={name!r}; valid: {', '.join(ATTENTIONS)}")


class ClassAttention(nn.Module):
    """Attention with separate q/k/v projections; ``cross``: only the first token queries."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"head width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attention: str, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, N, D]`` -> ``[B, 1, D]`` (cross) or ``[B, N, D]`` (self); ``key_mask [B, N]`` bool
        (True = attend) leaves padded keys out."""
        b, n, d = x.shape
        h = self.num_heads
        queries = x[:, :1] if attention == "cross" else x
        q = self.q(queries).reshape(b, -1, h, d // h).transpose(1, 2)
        k = self.k(x).reshape(b, n, h, d // h).transpose(1, 2)
        v = self.v(x).reshape(b, n, h, d // h).transpose(1, 2)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, -1, d))


class ClassAttentionBlock(nn.Module):
    """``norm1, attn, norm2, mlp`` as the official ``LayerScale_Block_CA`` (drop and drop-path 0)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm(dim)
        self.attn = ClassAttention(dim, num_heads, qkv_bias)
        self.norm2 = norm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward_global(self, x: torch.Tensor, attention: str) -> torch.Tensor:
        if attention == "cross":
            u = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
            x = x + self.attn(self.norm1(u), "cross")  # one global vector, broadcast to every token
        else:
            x = x + self.attn(self.norm1(x), "self")
        return x + self.mlp(self.norm2(x))

    def forward_local(
        self, query: torch.Tensor, keys: torch.Tensor, attention: str, key_mask: torch.Tensor | None
    ) -> torch.Tensor:
        u = torch.cat([query, keys], dim=1)
        mask = None if key_mask is None else torch.cat([key_mask.new_ones(len(u), 1), key_mask], dim=1)
        query = query + self.attn(self.norm1(u), attention, mask)[:, :1]
        return query + self.mlp(self.norm2(query))


class LocalAggHead(nn.Module):
    """The aggregation head h_theta (trained, global mode) / h_theta~ (its EMA, local mode).

    Config keys (``objective.head`` in ``configs/objective/dmt_jepa.yaml``): ``embed_dim`` and
    ``num_heads`` (the encoder's), ``num_blocks`` (2), ``mlp_ratio`` (4), ``qkv_bias`` (true).
    """

    def __init__(
        self, embed_dim: int = 768, num_heads: int = 12, num_blocks: int = 2, mlp_ratio: float = 4.0, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"objective.head.num_blocks={num_blocks}: at least one aggregation block is needed")
        self.embed_dim = embed_dim
        self.cls_blocks = nn.ModuleList(
            ClassAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        official_init_(self)

    def forward_global(self, tokens: torch.Tensor, attention: str = "cross") -> torch.Tensor:
        """Context mode: ``[B, N, D] -> [B, N, D]``."""
        for block in self.cls_blocks:
            tokens = block.forward_global(tokens, attention)
        return self.norm(tokens)

    def forward_local(
        self, query: torch.Tensor, keys: torch.Tensor, attention: str = "cross", key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Target mode: ``query [M, D]``, ``keys [M, k, D]`` (``key_mask [M, k]``) -> ``[M, D]``."""
        q = query.unsqueeze(1)
        for block in self.cls_blocks:
            q = block.forward_local(q, keys, attention, key_mask)
        return self.norm(q.squeeze(1))
