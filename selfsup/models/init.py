"""Weight initialisation as the official I-JEPA code ends up applying it.

The official constructors rescale ``attn.proj`` / ``mlp.fc2`` of block ``l`` by ``1/sqrt(2l)``, but
``helper.init_model`` then re-initialises every Linear and LayerNorm, undoing the rescale. The
effective init (``depth_rescale=False``) is therefore: every Linear and Conv2d ``trunc_normal(0.02)``
(truncated at +-2 absolute) with zero bias, every LayerNorm ``(1, 0)``. ``depth_rescale=True`` is the
correction (the rescale the constructors intended).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def official_init_(module: nn.Module, std: float = 0.02) -> None:
    """Linear/Conv2d: trunc_normal(std, a=-2, b=2), bias 0. LayerNorm: weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def depth_rescale_(blocks: Iterable[nn.Module]) -> None:
    """Divide ``attn.proj.weight`` and ``mlp.fc2.weight`` of block ``l`` (1-based) by ``sqrt(2 l)``."""
    for layer_id, block in enumerate(blocks, start=1):
        block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
        block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))
