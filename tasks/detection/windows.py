"""Window partitioning and decomposed relative-position attention bias, as ViTDet computes them.

Re-expressions of detectron2 ``modeling/backbone/utils.py`` (``window_partition``,
``window_unpartition``, ``get_rel_pos``, ``add_decomposed_rel_pos``) on ``[B, H, W, C]`` token maps.
A window partition pads the map at the bottom/right with zeros to a multiple of the window size;
the padded tokens take part in attention as keys (ViTDet does not mask them) and are cut away after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[B, H, W, C] -> [B * nW, window, window, C]`` and the padded size ``(Hp, Wp)``."""
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``window_partition``: ``[B * nW, window, window, C] -> [B, H, W, C]``."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // (hp * wp // window // window)
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous() if (hp, wp) != (h, w) else x


def relative_positions(q_size: int, k_size: int, table: torch.Tensor) -> torch.Tensor:
    """``[q_size, k_size, C]`` embeddings of every query-key offset along one axis; the ``[2L-1, C]``
    table is linearly resampled when it was made for another length (detectron2 ``get_rel_pos``)."""
    length = int(2 * max(q_size, k_size) - 1)
    if table.shape[0] != length:
        table = F.interpolate(table.t()[None], size=length, mode="linear")[0].t()
    q = torch.arange(q_size, device=table.device)[:, None] * max(k_size / q_size, 1.0)
    k = torch.arange(k_size, device=table.device)[None, :] * max(q_size / k_size, 1.0)
    return table[((q - k) + (k_size - 1) * max(q_size / k_size, 1.0)).long()]


def decomposed_rel_pos_bias(q: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Additive attention bias ``[B, heads, N, N]`` of MViTv2/ViTDet decomposed relative positions.

    ``q`` is the unscaled query ``[B, heads, N, head_dim]`` of an ``H x W = size`` token map; the bias
    of query ``(i, j)`` and key ``(k, l)`` is ``q . Rh[i - k] + q . Rw[j - l]``.
    """
    b, heads, n, dim = q.shape
    h, w = size
    rh, rw = relative_positions(h, h, table_h), relative_positions(w, w, table_w)
    r_q = q.reshape(b * heads, h, w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.reshape(b, heads, n, n)


class RelPos(nn.Module):
    """The two relative-position tables of one attention block (zeros at init, as ViTDet's default)."""

    def __init__(self, size: tuple[int, int], head_dim: int, zero_init: bool) -> None:
        super().__init__()
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * size[1] - 1, head_dim))
        if not zero_init:
            nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
            nn.init.trunc_normal_(self.rel_pos_w, std=0.02)
