"""Exponential moving average of a module's parameters (the JEPA target update)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- m * target + (1 - m) * online`` over **all** parameters, as the official loop.

    The official code also averages frozen parameters (the sin-cos ``pos_embed``); so does this.
    Uses ``torch._foreach_*`` (one fused kernel launch per dtype/device group instead of a Python loop).
    """
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(f"EMA: target has {len(t_params)} parameters, online has {len(o_params)}")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)
