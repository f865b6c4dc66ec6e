"""Our ``JEPAViT`` run the ViTDet way: window attention, optional relative positions, last-block map.

``ViTDetBackbone(vit, window_size, global_blocks, ...)`` changes how the blocks compute, never their
weights: it holds the ViT unchanged (same parameter names, so ``backbone.checkpoint`` still loads
strictly into it before it is wrapped) and runs each block as detectron2's ViTDet ``Block``::

    x = x + drop_path(attn(window_partition(norm1(x))))      # windows of window_size^2 tokens,
    x = x + drop_path(mlp(norm2(x)))                          # except in the global blocks

The output is the last block's ``[B, D, H/p, W/p]`` map, without the final LayerNorm (ViTDet has
none; ``final_norm: true`` applies ours). Relative-position tables (``use_rel_pos``, ViTDet's
default) are new parameters kept beside the ViT at ``rel_pos.blocks.<i>``, so layer-wise LR decay
gives them the depth of their block, as detectron2 does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from selfsup.models.vit import JEPAViT
from tasks.detection.windows import RelPos, decomposed_rel_pos_bias, window_partition, window_unpartition


def attention_with_bias(attn: nn.Module, x: torch.Tensor, size: tuple[int, int], rel_pos: RelPos) -> torch.Tensor:
    """timm ``Attention.forward`` on ``[B, N, C]`` tokens of an ``H x W`` map, plus the decomposed
    relative-position bias computed from the unscaled queries."""
    b, n, _ = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = decomposed_rel_pos_bias(q, rel_pos.rel_pos_h, rel_pos.rel_pos_w, size)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=attn.attn_drop.p if attn.training else 0.0)
    x = attn.norm(x.transpose(1, 2).reshape(b, n, attn.attn_dim))
    return attn.proj_drop(attn.proj(x))


class RelPosTables(nn.Module):
    """``blocks.<i>`` = the ``RelPos`` of block ``i`` (parameter names mirror the ViT's blocks)."""

    def __init__(self, tables: list[RelPos]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(tables)


class ViTDetBackbone(nn.Module):
    """A ``JEPAViT`` as the ViTDet backbone (see the module docstring).

    Config keys (``model.detector.backbone.net``): ``vit`` (the ``backbone`` config group),
    ``window_size`` (0: global attention everywhere), ``global_blocks`` (indices keeping global
    attention; ViT-B: 2, 5, 8, 11), ``use_rel_pos``, ``rel_pos_zero_init``, ``final_norm``.
    """

    def __init__(
        self,
        vit: JEPAViT,
        window_size: int,
        global_blocks: Sequence[int],
        use_rel_pos: bool,
        rel_pos_zero_init: bool,
        final_norm: bool,
    ) -> None:
        super().__init__()
        depth = len(vit.blocks)
        bad = [i for i in global_blocks if not 0 <= i < depth]
        if bad:
            raise ValueError(f"global_blocks {bad} out of range for a ViT with {depth} blocks")
        if window_size < 0:
            raise ValueError(f"window_size must be >= 0 (0 = global attention), got {window_size}")
        self.vit = vit
        self.window_size = window_size
        self.global_blocks = sorted(set(int(i) for i in global_blocks))
        self.windows = [window_size if window_size > 0 and i not in self.global_blocks else 0 for i in range(depth)]
        self.final_norm = final_norm
        self.out_channels = vit.embed_dim
        self.stride = vit.patch_size
        self.rel_pos: RelPosTables | None = None
        if use_rel_pos:
            head_dim = vit.blocks[0].attn.head_dim
            sizes = [(w, w) if w else vit.base_grid for w in self.windows]
            self.rel_pos = RelPosTables([RelPos(s, head_dim, rel_pos_zero_init) for s in sizes])
        if not final_norm:
            vit.norm.requires_grad_(False)  # unused: no gradient, and DDP must not wait for one

    def block_forward(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` on a ``[B, H, W, C]`` map."""
        block, window = self.vit.blocks[index], self.windows[index]
        shortcut = x
        x = block.norm1(x)
        size = x.shape[1:3]
        if window:
            x, padded = window_partition(x, window)
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        if self.rel_pos is None:
            tokens = block.attn(tokens)
        else:
            tokens = attention_with_bias(block.attn, tokens, (h, w), self.rel_pos.blocks[index])
        x = tokens.view(b, h, w, c)
        if window:
            x = window_unpartition(x, window, padded, tuple(size))
        x = shortcut + block.drop_path1(block.ls1(x))
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, D, H/p, W/p]`` (H, W multiples of the patch size)."""
        vit = self.vit
        grid = vit.grid_for(images.shape[-2], images.shape[-1])
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
        x = x.view(x.shape[0], grid[0], grid[1], -1)
        for i in range(len(vit.blocks)):
            if vit.grad_checkpointing and self.training:
                x = checkpoint(self.block_forward, i, x, use_reentrant=False)
            else:
                x = self.block_forward(i, x)
        if self.final_norm:
            x = vit.norm(x)
        return x.permute(0, 3, 1, 2).contiguous()
