"""Fixed 2-D sin-cos position embeddings, ordered exactly as the official I-JEPA code (MAE convention).

For a token at (row r, column c) of a grid, the first half of the channels encodes the **column**
index and the second half the **row** index (the official code names them the other way round but
computes this). Each half is ``[sin(pos * omega), cos(pos * omega)]`` with
``omega_i = 1 / 10000 ** (i / (D/4))``. Tokens are flattened row-major: ``k = r * W + c``.

At a grid other than the one the embedding was built for, the official code breaks (it assumes a
class token). Here the embedding is a function of continuous position, so it is *evaluated* at the
interpolated positions (``sincos``) instead of resampling a table; ``bicubic`` resamples the table as
timm does for checkpoints loaded at another size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sincos_1d", "sincos_2d", "grid_positions", "resize_pos_embed"]

INTERPOLATIONS = ("sincos", "bicubic")


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``[M] -> [M, dim]``: ``[sin(p * omega), cos(p * omega)]`` computed in float64."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def grid_positions(size: int, base: int | None = None) -> torch.Tensor:
    """Positions of ``size`` cells, in units of a grid of ``base`` cells spanning the same extent.

    ``base=None`` (or ``base == size``) gives ``0..size-1``. Otherwise cell centres are mapped as
    ``F.interpolate(align_corners=False)`` maps them: ``(i + 0.5) * base / size - 0.5``.
    """
    idx = torch.arange(size, dtype=torch.float64)
    if base is None or base == size:
        return idx
    return (idx + 0.5) * (base / size) - 0.5


def sincos_2d(
    dim: int, grid: tuple[int, int], base_grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """``[H*W, dim]`` float32 embedding for an ``H x W`` grid (row-major tokens).

    ``base_grid``: the grid the model was trained at; positions are scaled into its coordinates.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    h, w = grid
    bh, bw = base_grid if base_grid is not None else (h, w)
    rows = grid_positions(h, bh)
    cols = grid_positions(w, bw)
    row_idx, col_idx = torch.meshgrid(rows, cols, indexing="ij")  # [H, W] each
    emb_col = sincos_1d(dim // 2, col_idx.reshape(-1))  # first half: column (x) index
    emb_row = sincos_1d(dim // 2, row_idx.reshape(-1))  # second half: row (y) index
    return torch.cat([emb_col, emb_row], dim=1).float()


def resize_pos_embed(
    table: torch.Tensor,
    base_grid: tuple[int, int],
    grid: tuple[int, int],
    interpolation: str = "sincos",
) -> torch.Tensor:
    """Position embedding ``[1, H*W, D]`` for ``grid`` from a ``[1, h*w, D]`` table built at ``base_grid``."""
    if tuple(grid) == tuple(base_grid):
        return table
    if interpolation == "sincos":
        return sincos_2d(table.shape[-1], grid, base_grid).to(table.device, table.dtype).unsqueeze(0)
    if interpolation == "bicubic":
        d = table.shape[-1]
        t = table.reshape(1, base_grid[0], base_grid[1], d).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=grid, mode="bicubic", align_corners=False, antialias=True)
        return t.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d).to(table.dtype)
    raise ValueError(f"pos_embed_interp={interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
