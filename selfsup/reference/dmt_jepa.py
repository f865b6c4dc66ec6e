"""Independent, deliberately plain re-expressions of the official DMT-JEPA head and step, written
from the spec (``shared/spec/jepa.md`` b.1-b.4): explicit softmax, the official all-patches target
computation with ``q0.repeat(N, 1, 1)``, a literal ``get_local_index`` (generalised from a square
``sqrt(N)`` grid to ``H x W``), and a per-patch loop for the no-wrap neighbourhood. Parameter names
are the official ones, so state dicts are interchangeable with ``selfsup.models.local_agg_head``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.reference.ijepa import RefMLP, ref_apply_masks, ref_repeat_interleave_batch


class RefClassAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, attn_type: str) -> torch.Tensor:
        b, n, c = x.shape
        num_q = 1 if attn_type == "cross-attn" else n
        q_in = x[:, 0].unsqueeze(1) if attn_type == "cross-attn" else x
        q = self.q(q_in).reshape(b, num_q, self.heads, c // self.heads).permute(0, 2, 1, 3)
        k = self.k(x).reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3)
        v = self.v(x).reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3)
        attn = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, num_q, c))


class RefCABlock(nn.Module):
    """``LayerScale_Block_CA.forward(x, x_cls, attn_type, loc)`` as released."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefClassAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMLP(dim, 4 * dim)

    def forward(self, x: torch.Tensor, x_cls: torch.Tensor, attn_type: str, loc: bool) -> torch.Tensor:
        u = torch.cat((x_cls, x), dim=1)
        if loc:
            u_ = self.attn(self.norm1(u), attn_type)
            x = x_cls + (u_ if attn_type == "cross-attn" else u_[:, :1])
        elif attn_type == "cross-attn":
            x = x + self.attn(self.norm1(u), attn_type)
        else:
            x = x + self.attn(self.norm1(x), attn_type)
        return x + self.mlp(self.norm2(x))


def ref_local_index(height: int, width: int, k_size: int) -> torch.Tensor:
    """``get_local_index`` with the row modulus ``height`` and the column modulus ``width``."""
    out = []
    for i in range(height * width):
        ix, iy = i // width, i % width
        wx, wy = torch.zeros(height), torch.zeros(width)
        wx[ix], wy[iy] = 1, 1
        for j in range(1, k_size // 2 + 1):
            wx[(ix + j) % height] = 1
            wx[(ix - j) % height] = 1
            wy[(iy + j) % width] = 1
            wy[(iy - j) % width] = 1
        weight = (wy.unsqueeze(0) * wx.unsqueeze(1)).view(-1)
        weight[i] = 0
        out.append(weight.nonzero().squeeze())
    return torch.stack(out)


class RefLocalAggHead(nn.Module):
    """``LocalAggHead.forward(x, loc, attn_type)`` as released (the target path at every patch).

    ``query_order="official_repeat"`` is the released ``cls_tokens.repeat(N, 1, 1)``;
    ``"per_image"`` replaces it by ``repeat_interleave(N, dim=0)`` (spec b.2, the fix).
    """

    def __init__(self, dim: int, heads: int, k_num: int, k_size: int = 3, num_blocks: int = 2) -> None:
        super().__init__()
        self.cls_blocks = nn.ModuleList(RefCABlock(dim, heads) for _ in range(num_blocks))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.k_num, self.k_size, self.dim = k_num, k_size, dim
        self.local_index: dict[tuple[int, int], torch.Tensor] = {}  # the official precomputed tables

    def forward(
        self, x: torch.Tensor, loc: bool, attn_type: str = "cross-attn", grid: tuple[int, int] | None = None,
        query_order: str = "official_repeat",
    ) -> torch.Tensor:
        cls_tokens = x.mean(dim=1, keepdim=True)
        if not loc:
            tokens = x
            for i, blk in enumerate(self.cls_blocks):
                if i > 0:
                    cls_tokens = tokens.mean(dim=1, keepdim=True)
                tokens = blk(tokens, cls_tokens, attn_type, loc=False)
            return self.norm(tokens)
        n = x.shape[1]
        height, width = grid or (int(n**0.5), int(n**0.5))
        if (height, width) not in self.local_index:
            self.local_index[(height, width)] = ref_local_index(height, width, self.k_size)
        local_idx = self.local_index[(height, width)]
        x_norm = F.normalize(x, dim=-1)
        sim = x_norm[:, local_idx] @ x_norm.unsqueeze(2).transpose(-2, -1)  # [B, N, C, 1]
        top_idx = sim.squeeze(-1).topk(k=self.k_num, dim=-1)[1].view(-1, self.k_num, 1)
        x_loc = x[:, local_idx].view(-1, local_idx.shape[1], self.dim)
        x_loc = torch.gather(x_loc, 1, top_idx.expand(-1, -1, self.dim))
        if query_order == "official_repeat":
            q = cls_tokens.repeat(n, 1, 1)
        else:
            q = cls_tokens.repeat_interleave(n, dim=0)
        for blk in self.cls_blocks:
            q = blk(x_loc, q, attn_type, loc=True)
        return self.norm(q.view(x.shape))


def ref_clamped_targets(head: RefLocalAggHead, x: torch.Tensor, grid: tuple[int, int], attn_type: str = "cross-attn") -> torch.Tensor:
    """The target path without wrap-around, one patch at a time: candidates are the in-image
    positions of the window, the top ``min(k, #candidates)`` of them are the keys (no padding)."""
    height, width = grid
    r = head.k_size // 2
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for i in range(height * width):
            row, col = divmod(i, width)
            cands = [
                rr * width + cc
                for rr in range(row - r, row + r + 1)
                for cc in range(col - r, col + r + 1)
                if 0 <= rr < height and 0 <= cc < width and rr * width + cc != i
            ]
            sims = F.cosine_similarity(x[b, cands], x[b, i].unsqueeze(0), dim=-1)
            keep = [cands[j] for j in sims.topk(min(head.k_num, len(cands))).indices.tolist()]
            q = x[b].mean(dim=0).view(1, 1, -1)
            for blk in head.cls_blocks:
                q = blk(x[b, keep].unsqueeze(0), q, attn_type, loc=True)
            out[b, i] = head.norm(q)[0, 0]
    return out


def ref_dmt_loss(
    encoder, target_encoder, predictor, head: RefLocalAggHead, target_head: RefLocalAggHead, imgs, masks_enc, masks_pred,
    context_attn: str = "cross-attn", target_attn: str = "cross-attn", query_order: str = "official_repeat",
) -> torch.Tensor:
    """One step's loss as the released ``train.py`` (``forward_target`` / ``forward_context``)."""
    with torch.no_grad():
        h = target_encoder(imgs)
        h = F.layer_norm(h, (h.size(-1),))
        h = target_head(h, loc=True, attn_type=target_attn, query_order=query_order)
        h = ref_apply_masks(h, masks_pred)
        h = ref_repeat_interleave_batch(h, len(imgs), len(masks_enc))
    z = head(encoder(imgs, masks_enc), loc=False, attn_type=context_attn)
    z = predictor(z, masks_enc, masks_pred)
    return F.smooth_l1_loss(z, h)
