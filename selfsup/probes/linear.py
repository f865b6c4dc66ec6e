"""Linear probing (LP): no pooling parameters, the representation is a token or the token mean.

``token``: ``mean`` (GAP over the patch tokens, the official ``pos``/``gap``), ``cls`` (the class
token, the official ``cls``; the features must include it: ``features.tokens=all``), or ``cls_mean``
(class token and patch mean concatenated, DINOv2's ``avgpool`` input, width 2D).
"""

from __future__ import annotations

import torch
from torch import nn

TOKENS = ("mean", "cls", "cls_mean")


class TokenPool(nn.Module):
    """Config keys (``configs/probe/linear.yaml``): ``dim``, ``token``, ``num_prefix_tokens`` (set from the features)."""

    def __init__(self, dim: int, token: str = "mean", num_prefix_tokens: int = 0) -> None:
        super().__init__()
        if token not in TOKENS:
            raise ValueError(f"probe.token={token!r}; valid: {', '.join(TOKENS)}")
        if token != "mean" and num_prefix_tokens < 1:
            raise ValueError(
                f"probe.token={token} needs the class token: use a backbone that has one and features.tokens=all"
            )
        self.token = token
        self.num_prefix_tokens = num_prefix_tokens
        self.out_dim = 2 * dim if token == "cls_mean" else dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = x[:, self.num_prefix_tokens :]
        if self.token == "mean":
            return patches.mean(dim=1)
        if self.token == "cls":
            return x[:, 0]
        return torch.cat([x[:, 0], patches.mean(dim=1)], dim=-1)
