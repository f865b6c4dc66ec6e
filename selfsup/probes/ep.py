"""Efficient probing (EP, Psomas et al.; ``poolings/ep.py`` of billpsomas/efficient-probing).

``M`` learned queries live in the input space (identity keys); query ``j`` attends over the tokens
with ``softmax_N(q_j . x_n * D^-0.5)`` and owns the contiguous value channels
``[j D'/M, (j+1) D'/M)`` of ``W_v x`` (``D' = D / d_out``); the ``M`` slices are concatenated
(spec 3.2). ``W_v`` is the only projection; there is no output projection, norm or MLP.

``pool_then_project=True`` (default) applies ``W_v`` after the attention-weighted sum: the attention
does not depend on ``W_v`` and its rows sum to one, so ``y_j = W_v[j] (X a_j)`` is algebraically the
official ``(W_v X)[j] a_j`` at a fraction of the cost (spec 3.5); it runs as one autograd Function
(``ep_function.PoolThenProject``: a few large batched matmuls, no copy of the tokens). ``False`` runs
the official order with plain autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.probes.ep_function import pool_then_project, token_logits


class EfficientProbing(nn.Module):
    """Config keys (``configs/probe/ep.yaml``): ``dim`` (set from the features), ``num_queries`` (M),
    ``d_out`` (output width D/d_out), ``qkv_bias`` (bias of W_v), ``qk_scale`` (null: D^-0.5),
    ``pool_then_project``."""

    def __init__(
        self,
        dim: int,
        num_queries: int = 32,
        d_out: int = 1,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        pool_then_project: bool = True,
    ) -> None:
        super().__init__()
        if dim % (d_out * num_queries):
            raise ValueError(
                f"EP needs the feature width {dim} divisible by d_out*num_queries = {d_out}*{num_queries}; "
                f"pick probe.num_queries / probe.d_out accordingly"
            )
        self.num_queries = num_queries
        self.d_out = d_out
        self.scale = qk_scale or dim**-0.5
        self.pool_then_project = pool_then_project
        self.out_dim = dim // d_out
        self.v = nn.Linear(dim, self.out_dim, bias=qkv_bias)
        self.cls_token = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)  # the queries (official name)

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, M, T]``: query ``j``'s softmax attention over the tokens."""
        return token_logits(x, self.cls_token[0], self.scale).softmax(dim=1).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        m, width = self.num_queries, self.out_dim
        if self.pool_then_project:
            return pool_then_project(x, self.cls_token, self.v.weight, self.v.bias, self.scale)
        attn = self.attention_maps(x)  # [B, M, N]
        values = self.v(x).view(b, n, m, width // m).permute(0, 2, 1, 3)  # [B, M, N, D'/M]
        return (attn.unsqueeze(2) @ values).reshape(b, width)
