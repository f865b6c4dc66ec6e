"""EP's pool-then-project path as one autograd Function (``probe.pool_then_project=true``, spec 3.2/3.5).

Same math as ``EfficientProbing`` in the official order, written so a training step is a handful of
large batched matmuls and never copies the tokens. On ``x [B, N, D]``, queries ``q [M, D]``,
``W_v [D', D]`` (query ``m`` owns rows ``[m K, (m+1) K)``, ``K = D'/M``), ``s = probe.qk_scale``:

    logits[b, n, m] = (s q_m) . x_bn                      bmm against the shared queries  [B, N, M]
    a = softmax over n (dim 1)
    p[b, m] = sum_n a[b, n, m] x_bn                       bmm, ``a`` read transposed       [B, M, D]
    y[b, m-th slice] = W_v[m-th rows] p[b, m] (+ bias)    bmm over the M queries           [B, D']

Backward, with ``g = dL/dy`` viewed ``[B, M, K]``:

    dW_v[m] = sum_b g[b, m]^T p[b, m]         dp[b, m] = g[b, m] W_v[m]
    da[b, n, m] = x_bn . dp[b, m]             dlogits = softmax backward over n
    dq_m = s sum_{b, n} dlogits[b, n, m] x_bn
    dx = a dp + s dlogits q                   (only when the tokens require grad)

The ``[B, N, M]`` layout lets the logits, the softmax and its backward, and both token products of
the backward use the same buffer without a transpose copy; ``dq`` sums over images in at most
``TOKEN_SUM_GROUPS`` groups (one long-K GEMM is slower on CPU, one per image needs a ``[B, M, D]``
temporary). Saved for backward: ``a`` and ``p`` (``B M (N + D)`` floats) and a reference to ``x``.
Under autocast the backward re-enters the forward's autocast state (as ``torch.amp.custom_bwd`` does).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable

TOKEN_SUM_GROUPS = 32  # dq as at most 32 batched GEMMs: as fast as one per image, without a [B, M, D] temporary


def token_logits(x: torch.Tensor, queries: torch.Tensor, scale: float) -> torch.Tensor:
    """``[B, N, M]``: ``(scale * q_m) . x_bn``, one batched matmul against the shared ``queries [M, D]``."""
    qs = queries * scale
    return torch.bmm(x, qs.t().expand(x.shape[0], -1, -1))


class PoolThenProject(torch.autograd.Function):
    """``PoolThenProject.apply(x, queries [M, D] or [1, M, D], weight [D', D], bias [D'] | None, scale) -> [B, D']``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, queries: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
        b, _, d = x.shape
        m, width = queries.shape[-2], weight.shape[0]
        attn = torch.softmax(token_logits(x, queries.view(m, d), scale), dim=1)  # [B, N, M]
        pooled = torch.bmm(attn.transpose(1, 2), x)  # [B, M, D]
        w = weight.view(m, width // m, d).transpose(1, 2)  # [M, D, K]: query m's rows of W_v
        lhs = pooled.transpose(0, 1)  # [M, B, D]
        out = torch.bmm(lhs, w) if bias is None else torch.baddbmm(bias.view(m, 1, width // m), lhs, w)  # [M, B, K]
        device = x.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.scale, ctx.has_bias = scale, bias is not None
        ctx.save_for_backward(x, queries, weight, attn, pooled)
        return out.transpose(0, 1).reshape(b, width)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        device, enabled, dtype = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            return PoolThenProject._backward(ctx, grad)

    @staticmethod
    def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, queries, weight, attn, pooled = ctx.saved_tensors
        need_x, need_q, need_w, need_b, _ = ctx.needs_input_grad
        b, _, d = x.shape
        m, width = queries.shape[-2], weight.shape[0]
        g = grad.contiguous().view(b, m, width // m)  # (an expanded grad would send the bmm's to a per-item loop)
        gx = gq = gw = gb = None
        if need_w:
            gw = torch.bmm(g.permute(1, 2, 0), pooled.transpose(0, 1)).reshape(width, d).to(weight.dtype)
        if need_b and ctx.has_bias:
            gb = grad.sum(0).to(weight.dtype)
        if need_x or need_q:
            gpooled = torch.bmm(g.transpose(0, 1), weight.view(m, width // m, d))  # [M, B, D]
            gattn = torch.bmm(x, gpooled.permute(1, 2, 0))  # [B, N, M]
            glogits = torch._softmax_backward_data(gattn, attn, 1, attn.dtype)  # [B, N, M]
            if need_q:  # the sum over all B*N tokens as G GEMMs over B/G images each, then a [G, M, D] sum
                groups = math.gcd(b, TOKEN_SUM_GROUPS) if x.is_contiguous() else b
                gq = torch.bmm(glogits.view(groups, -1, m).transpose(1, 2), x.view(groups, -1, d)).sum(0)
                gq = gq.mul_(ctx.scale).to(queries.dtype).view_as(queries)
            if need_x:
                gx = torch.bmm(attn, gpooled.transpose(0, 1))  # [B, N, D]
                gx = gx.baddbmm_(glogits, queries.view(m, d).to(gx.dtype).expand(b, -1, -1), alpha=ctx.scale).to(x.dtype)
        return gx, gq, gw, gb, None


def pool_then_project(x: torch.Tensor, queries: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """EP output ``[B, D']`` with ``W_v`` applied after pooling (see the module docstring); ``queries``
    ``[M, D]`` or ``[1, M, D]`` (EP's ``cls_token``, passed whole so its grad needs no select-backward)."""
    return PoolThenProject.apply(x, queries, weight, bias, scale)
