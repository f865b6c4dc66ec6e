"""The I-JEPA predictor (official ``VisionTransformerPredictor``), built from timm blocks.

``predictor_embed`` (D -> 384) -> add the fixed sin-cos position of each context token -> append, for
each target block in its **own sequence**, one shared learnable ``mask_token`` plus the target
positions -> ``depth`` pre-norm blocks at width 384 -> ``predictor_norm`` -> keep the target rows ->
``predictor_proj`` (384 -> D). Parameter names match the official checkpoint's ``predictor`` dict.
The last block runs for the target rows only (``block_rows.RowsBlock``): the context rows of its output are
thrown away, so their query, projection and MLP are not computed (``target_rows_only: false`` runs
the whole block, as the official code does; the outputs are equal up to float rounding).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from selfsup.masks.utils import apply_masks, repeat_interleave_batch
from selfsup.models.block_rows import RowsBlock
from selfsup.models.init import depth_rescale_, official_init_
from selfsup.models.pos_embed import resize_pos_embed, sincos_2d


class JEPAPredictor(nn.Module):
    """Narrow ViT predicting target-block representations from context tokens.

    Config keys (``configs/predictor/*.yaml``): ``embed_dim`` (encoder width), ``predictor_embed_dim``
    (384 in every official config), ``depth``, ``num_heads`` (= encoder heads), ``mlp_ratio``,
    ``qkv_bias``, ``img_size`` and ``patch_size`` (the training crop and the encoder's patch, which
    fix the grid of the position table), ``drop_path_rate``, ``pos_embed_interp``, ``depth_rescale_init``,
    ``target_rows_only`` (the last block skips the context rows, whose outputs are discarded).
    """

    def __init__(
        self,
        embed_dim: int = 768,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        img_size: int | tuple[int, int] | list[int] = 224,
        patch_size: int = 16,
        drop_path_rate: float = 0.0,
        pos_embed_interp: str = "sincos",
        depth_rescale_init: bool = False,
        target_rows_only: bool = True,
    ) -> None:
        super().__init__()
        if predictor_embed_dim % num_heads:
            raise ValueError(
                f"predictor.predictor_embed_dim={predictor_embed_dim} is not divisible by "
                f"predictor.num_heads={num_heads}"
            )
        img_hw = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
        self.base_grid = (img_hw[0] // patch_size, img_hw[1] // patch_size)
        self.pos_embed_interp = pos_embed_interp
        self.target_rows_only = target_rows_only
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        self.predictor_pos_embed = nn.Parameter(
            sincos_2d(predictor_embed_dim, self.base_grid).unsqueeze(0), requires_grad=False
        )
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic-depth ramp
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.predictor_blocks = nn.ModuleList(
            RowsBlock(
                dim=predictor_embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=dpr[i],
                norm_layer=norm,
                act_layer=nn.GELU,
            )
            for i in range(depth)
        )
        self.predictor_norm = norm(predictor_embed_dim)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim, bias=True)
        official_init_(self)
        with torch.no_grad():
            nn.init.trunc_normal_(self.mask_token, std=0.02, a=-2.0, b=2.0)
        if depth_rescale_init:
            depth_rescale_(self.predictor_blocks)

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        return resize_pos_embed(self.predictor_pos_embed, self.base_grid, grid, self.pos_embed_interp)

    def forward(
        self,
        x: torch.Tensor,
        masks_x: list[torch.Tensor],
        masks: list[torch.Tensor],
        grid: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """``x [nenc*B, Nc, D]``, ``masks_x``: nenc x ``[B, Nc]``, ``masks``: npred x ``[B, Nt]``
        -> ``[npred*nenc*B, Nt, D]`` (mask-major, as the official predictor)."""
        masks_x = list(masks_x) if isinstance(masks_x, (list, tuple)) else [masks_x]
        masks = list(masks) if isinstance(masks, (list, tuple)) else [masks]
        batch = x.shape[0] // len(masks_x)
        pos = self.pos_embed_for(grid or self.base_grid).expand(batch, -1, -1)

        x = self.predictor_embed(x)
        x = x + apply_masks(pos, masks_x)
        n_ctx = x.shape[1]

        pos_t = repeat_interleave_batch(apply_masks(pos, masks), batch, repeat=len(masks_x))
        pred_tokens = self.mask_token + pos_t
        x = torch.cat([x.repeat(len(masks), 1, 1), pred_tokens], dim=1)
        rows_only = self.target_rows_only and len(self.predictor_blocks) > 0
        for blk in self.predictor_blocks[:-1] if rows_only else self.predictor_blocks:
            x = blk(x)
        x = self.predictor_blocks[-1](x, rows_from=n_ctx) if rows_only else x[:, n_ctx:]
        return self.predictor_proj(self.predictor_norm(x))  # LayerNorm is per row: slicing first is the same
