"""Index helpers in the official I-JEPA format (lists of ``LongTensor [B, K]`` of flat patch indices)."""

from __future__ import annotations

import torch


def apply_masks(x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """Gather ``x [B, N, D]`` with each mask ``[B, K]`` and concatenate along dim 0 (mask-major).

    Output ``[len(masks) * B, K, D]``, ordered ``[mask0: img0..B-1, mask1: img0..B-1, ...]``.
    """
    d = x.size(-1)
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, d)) for m in masks], dim=0)


def repeat_interleave_batch(x: torch.Tensor, batch_size: int, repeat: int) -> torch.Tensor:
    """Repeat each chunk of ``batch_size`` rows ``repeat`` times in place (official semantics)."""
    if repeat == 1:
        return x
    chunks = x.split(batch_size, dim=0)
    return torch.cat([c for c in chunks for _ in range(repeat)], dim=0)
