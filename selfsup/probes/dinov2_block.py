"""A transformer block as a probe (``DinoViTBlockPooling`` of ``poolings/other_pool.py``), then the token mean.

One DINOv2 ``Block(dim, num_heads=8)``: pre-LayerNorm (eps 1e-5) full self-attention over all tokens
(qkv without bias, proj with bias), 4x GELU MLP with biases, no LayerScale, no drop path, PyTorch
default init. The most expensive probe (about 12x EP's multiply-adds, spec 8).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn


class ViTBlockPooling(nn.Module):
    """Config keys (``configs/probe/dinov2_block.yaml``): ``dim``, ``num_heads`` (8), ``mlp_ratio``."""

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"probe.num_heads={num_heads} does not divide the feature width {dim}")
        self.out_dim = dim
        self.dino_block = Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=False, proj_bias=True, norm_layer=nn.LayerNorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dino_block(x).mean(dim=1)
