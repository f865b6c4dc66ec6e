"""A timm ``Block`` evaluated for a suffix of its rows only.

Attention lets every row read every other row, but a row's *output* depends only on its own query.
When a caller keeps only the rows ``start:`` of a block's output (the I-JEPA predictor keeps the
target rows of its last block), the other rows' query, attention output, projection and MLP are
wasted work: ``block_forward_rows`` computes keys and values for all rows and the rest for the kept
rows only. The result equals ``block(x)[:, start:]`` up to float rounding.

``RowsBlock`` is a timm ``Block`` (same parameters and names) whose ``forward`` takes ``rows_from``:
going through ``forward`` keeps module hooks working (FSDP2 gathers a block's shards in its
pre-forward hook, so a block must not be evaluated by calling its submodules from outside).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block


def block_forward_rows(block: Block, x: torch.Tensor, start: int) -> torch.Tensor:
    """``block(x)[:, start:]`` for ``x [B, N, C]`` without computing rows ``:start`` past the keys
    and values (same modules, same dropout and drop-path draws per sample)."""
    attn = block.attn
    batch, length, _ = x.shape
    h = block.norm1(x)
    qkv = attn.qkv(h).reshape(batch, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    q = q[:, :, start:]
    dropout = attn.attn_drop.p if attn.training else 0.0
    if getattr(attn, "fused_attn", True):
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    else:
        weights = attn.attn_drop(((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        out = weights @ v
    out = out.transpose(1, 2).reshape(batch, length - start, -1)
    out = attn.norm(out) if hasattr(attn, "norm") else out
    gate = getattr(attn, "gate", None)
    if gate is not None:
        out = out * gate(h[:, start:]).sigmoid()
    out = attn.proj_drop(attn.proj(out))
    y = x[:, start:] + block.drop_path1(block.ls1(out))
    return y + block.drop_path2(block.ls2(block.mlp(block.norm2(y))))


class RowsBlock(Block):
    """timm ``Block`` whose ``forward(x, rows_from=s)`` returns ``block(x)[:, s:]`` via
    ``block_forward_rows`` (``rows_from=None``: the plain block)."""

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rows_from: int | None = None,
    ) -> torch.Tensor:
        if rows_from is None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        if attn_mask is not None or is_causal:
            raise ValueError("RowsBlock: rows_from does not combine with an attention mask")
        return block_forward_rows(self, x, rows_from)
