"""Independent, deliberately plain re-expressions of the official I-JEPA modules and step, written
from the spec (``shared/spec/jepa.md`` a.3-a.6) for equivalence tests: explicit softmax attention,
Python loops, numpy sin-cos. Parameter names follow the official checkpoints, so state dicts are
interchangeable with the library's modules.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def spec_sincos(dim: int, grid: int) -> np.ndarray:
    """Spec a.4, literally: first half of the channels = column index, second half = row index."""
    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.divmod(np.arange(grid * grid), grid)  # token k = row * G + col
    return np.concatenate([one_d(dim // 2, cols.astype(float)), one_d(dim // 2, rows.astype(float))], axis=1)


class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))


class RefMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def ref_apply_masks(x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    out = []
    for m in masks:
        out.append(torch.stack([x[b, m[b]] for b in range(x.shape[0])]))
    return torch.cat(out, dim=0)


def ref_repeat_interleave_batch(x: torch.Tensor, batch: int, repeat: int) -> torch.Tensor:
    chunks = [x[i * batch : (i + 1) * batch] for i in range(len(x) // batch)]
    return torch.cat([c for c in chunks for _ in range(repeat)], dim=0)


class RefViT(nn.Module):
    """Official encoder layout: patch_embed.proj, pos_embed (frozen), blocks, norm."""

    def __init__(self, img: int, patch: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        grid = img // patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.pos_embed = nn.Parameter(torch.from_numpy(spec_sincos(dim, grid)).float()[None], requires_grad=False)
        self.blocks = nn.ModuleList(RefBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        if masks is not None:
            x = ref_apply_masks(x, masks)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class RefPredictor(nn.Module):
    """Official predictor layout and forward (spec a.3 steps 1-7)."""

    def __init__(self, grid: int, dim: int, pdim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.predictor_embed = nn.Linear(dim, pdim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pdim))
        self.predictor_pos_embed = nn.Parameter(
            torch.from_numpy(spec_sincos(pdim, grid)).float()[None], requires_grad=False
        )
        self.predictor_blocks = nn.ModuleList(RefBlock(pdim, heads) for _ in range(depth))
        self.predictor_norm = nn.LayerNorm(pdim, eps=1e-6)
        self.predictor_proj = nn.Linear(pdim, dim)

    def forward(self, x: torch.Tensor, masks_x: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        b = len(x) // len(masks_x)
        x = self.predictor_embed(x)
        x = x + ref_apply_masks(self.predictor_pos_embed.repeat(b, 1, 1), masks_x)
        n_ctx = x.shape[1]
        pos = ref_apply_masks(self.predictor_pos_embed.repeat(b, 1, 1), masks)
        pos = ref_repeat_interleave_batch(pos, b, len(masks_x))
        pred = self.mask_token.repeat(pos.shape[0], pos.shape[1], 1) + pos
        x = torch.cat([x.repeat(len(masks), 1, 1), pred], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)
        return self.predictor_proj(self.predictor_norm(x)[:, n_ctx:])


def ref_ijepa_loss(encoder, target_encoder, predictor, imgs, masks_enc, masks_pred) -> torch.Tensor:
    """Spec a.5, one step's loss."""
    with torch.no_grad():
        h = target_encoder(imgs)
        h = F.layer_norm(h, (h.size(-1),))
        h = ref_apply_masks(h, masks_pred)
        h = ref_repeat_interleave_batch(h, len(imgs), len(masks_enc))
    z = predictor(encoder(imgs, masks_enc), masks_enc, masks_pred)
    return F.smooth_l1_loss(z, h)


class RefWarmupCosine:
    """The official stateful LR scheduler: ``step()`` increments first, so the first value is step 1."""

    def __init__(self, warmup_steps: int, start_lr: float, ref_lr: float, t_max: int, final_lr: float) -> None:
        self.warmup, self.start, self.ref, self.final = warmup_steps, start_lr, ref_lr, final_lr
        self.t_after = t_max - warmup_steps
        self.step_count = 0

    def step(self) -> float:
        self.step_count += 1
        s = self.step_count
        if s < self.warmup:
            return self.start + s / max(1, self.warmup) * (self.ref - self.start)
        p = (s - self.warmup) / max(1, self.t_after)
        return max(self.final, self.final + (self.ref - self.final) * 0.5 * (1 + math.cos(math.pi * p)))


class RefCosineWD:
    def __init__(self, ref_wd: float, t_max: int, final_wd: float) -> None:
        self.ref, self.final, self.t_max, self.step_count = ref_wd, final_wd, t_max, 0

    def step(self) -> float:
        self.step_count += 1
        progress = self.step_count / self.t_max
        wd = self.final + (self.ref - self.final) * 0.5 * (1 + math.cos(math.pi * progress))
        return max(self.final, wd) if self.final <= self.ref else min(self.final, wd)


def ref_momentum(ema: tuple[float, float], ipe: int, epochs: int, ipe_scale: float = 1.0):
    total = ipe * epochs * ipe_scale
    return (ema[0] + i * (ema[1] - ema[0]) / total for i in range(int(total) + 1))
