"""The I-JEPA multi-block mask sampler, in an ``official`` and a ``corrected`` mode.

``official`` reproduces the released ``MaskCollator`` (spec a.2) step for step:

- one uniform draw sets **both** the scale and the aspect ratio of the target blocks, once per batch
  (all blocks in a batch share one size); the context block is square with its own scale draw;
- ``h, w`` are reduced while ``>= grid`` (a block never spans the grid), and the top-left corner is
  drawn from ``randint(0, H - h)`` (exclusive), so **the last row and column are never covered**;
  with the default context scale the context block sits at the top-left corner every time;
- targets are cut out of the context (``allow_overlap=False``); a context with ``<= min_keep``
  patches is redrawn, and after 20 failures the last constraints are dropped, as the official loop;
- every index list is truncated to the batch minimum by keeping the first (top-left) indices.

``corrected`` keeps the batching (one block size per batch) and fixes the biases: independent scale
and aspect draws, positions over the whole grid (a block may touch the last row/column, or span the
grid), and truncation to the batch minimum by a uniformly random subset instead of the top-left.

Unlike the official collator (block sizes from a shared step counter, positions from the unseeded
global RNG), every draw here comes from one ``torch.Generator`` the collator seeds from
``(seed, epoch, rank, batch index)``: a resumed run, and any number of workers, draw the same masks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

MODES = ("official", "corrected")


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class MultiBlockMaskSampler:
    """Samples context (encoder) and target (predictor) index masks for a batch.

    Config keys (``configs/mask/*.yaml``): ``mode`` (official | corrected), ``input_size``,
    ``patch_size``, ``enc_mask_scale``, ``pred_mask_scale``, ``aspect_ratio``, ``nenc``, ``npred``,
    ``min_keep``, ``allow_overlap``.
    """

    def __init__(
        self,
        mode: str = "corrected",
        input_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        enc_mask_scale: Sequence[float] = (0.85, 1.0),
        pred_mask_scale: Sequence[float] = (0.15, 0.2),
        aspect_ratio: Sequence[float] = (0.75, 1.5),
        nenc: int = 1,
        npred: int = 4,
        min_keep: int = 10,
        allow_overlap: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mask.mode={mode!r}; valid: {', '.join(MODES)}")
        h_px, w_px = _pair(input_size)
        if h_px % patch_size or w_px % patch_size:
            raise ValueError(f"mask.input_size={input_size} is not a multiple of mask.patch_size={patch_size}")
        self.mode = mode
        self.height, self.width = h_px // patch_size, w_px // patch_size
        self.enc_mask_scale = (float(enc_mask_scale[0]), float(enc_mask_scale[1]))
        self.pred_mask_scale = (float(pred_mask_scale[0]), float(pred_mask_scale[1]))
        self.aspect_ratio = (float(aspect_ratio[0]), float(aspect_ratio[1]))
        self.nenc, self.npred = int(nenc), int(npred)
        self.min_keep = int(min_keep)
        self.allow_overlap = bool(allow_overlap)
        self._check_feasible()

    # ------------------------------------------------------------------ sizes
    def _block_size(self, scale: float, aspect: float) -> tuple[int, int]:
        max_keep = int(self.height * self.width * scale)
        h = int(round(math.sqrt(max_keep * aspect)))
        w = int(round(math.sqrt(max_keep / aspect)))
        if self.mode == "official":  # `>=`: a block never spans the grid
            h, w = min(h, self.height - 1), min(w, self.width - 1)
        else:
            h, w = min(h, self.height), min(w, self.width)
        return max(h, 1), max(w, 1)

    def sample_block_size(
        self, generator: torch.Generator, scale: Sequence[float], aspect_ratio: Sequence[float]
    ) -> tuple[int, int]:
        r = torch.rand(1, generator=generator).item()
        r_ar = r if self.mode == "official" else torch.rand(1, generator=generator).item()
        s = scale[0] + r * (scale[1] - scale[0])
        ar = aspect_ratio[0] + r_ar * (aspect_ratio[1] - aspect_ratio[0])
        return self._block_size(s, ar)

    def _check_feasible(self) -> None:
        """Refuse settings where the official loop would never find a valid block (issue #68)."""
        smallest = min(
            h * w
            for s in self.pred_mask_scale
            for ar in self.aspect_ratio
            for h, w in [self._block_size(s, ar)]
        )
        ctx_h, ctx_w = self._block_size(self.enc_mask_scale[0], 1.0)
        for what, n in (("target", smallest), ("context", ctx_h * ctx_w)):
            if n <= self.min_keep:
                raise ValueError(
                    f"mask.min_keep={self.min_keep}, but {what} blocks on this {self.height}x{self.width} "
                    f"patch grid can have only {n} patches (a block is valid only with more than min_keep): "
                    f"lower mask.min_keep below {n} or raise the mask scales"
                )

    # ------------------------------------------------------------------ blocks
    def _corner(self, generator: torch.Generator, h: int, w: int) -> tuple[int, int]:
        extra = 0 if self.mode == "official" else 1
        top = int(torch.randint(0, self.height - h + extra, (1,), generator=generator))
        left = int(torch.randint(0, self.width - w + extra, (1,), generator=generator))
        return top, left

    def sample_block(
        self,
        generator: torch.Generator,
        size: tuple[int, int],
        acceptable: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat sorted indices of one block (minus the unacceptable regions) and its 0/1 complement."""
        h, w = size
        tries, timeout = 0, 20
        while True:
            top, left = self._corner(generator, h, w)
            mask = torch.zeros((self.height, self.width), dtype=torch.int32)
            mask[top : top + h, left : left + w] = 1
            if acceptable is not None:
                for region in acceptable[: max(len(acceptable) - tries, 0)]:
                    mask *= region
            idx = torch.nonzero(mask.flatten()).squeeze(-1)
            if len(idx) > self.min_keep:
                break
            timeout -= 1
            if timeout == 0:
                tries, timeout = tries + 1, 20
                warnings.warn(
                    "mask sampler: no valid context block found in 20 draws; "
                    "dropping target constraints (the official sampler does the same)",
                    stacklevel=2,
                )
        complement = torch.ones((self.height, self.width), dtype=torch.int32)
        complement[top : top + h, left : left + w] = 0
        return idx, complement

    # ------------------------------------------------------------------ batch
    def _truncate(self, masks: list[list[torch.Tensor]], length: int, generator: torch.Generator):
        if self.mode == "official":
            return [[m[:length] for m in per_image] for per_image in masks]
        out = []
        for per_image in masks:
            row = []
            for m in per_image:
                if len(m) > length:
                    keep = torch.randperm(len(m), generator=generator)[:length].sort().values
                    m = m[keep]
                row.append(m)
            out.append(row)
        return out

    def __call__(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Returns ``(masks_enc, masks_pred)``: ``nenc`` x ``[B, Nc]`` and ``npred`` x ``[B, Nt]``."""
        p_size = self.sample_block_size(generator, self.pred_mask_scale, self.aspect_ratio)
        e_size = self.sample_block_size(generator, self.enc_mask_scale, (1.0, 1.0))
        all_pred, all_enc = [], []
        for _ in range(batch_size):
            preds, complements = [], []
            for _ in range(self.npred):
                idx, comp = self.sample_block(generator, p_size)
                preds.append(idx)
                complements.append(comp)
            acceptable = None if self.allow_overlap else complements
            encs = [self.sample_block(generator, e_size, acceptable)[0] for _ in range(self.nenc)]
            all_pred.append(preds)
            all_enc.append(encs)
        min_pred = min(len(m) for per_image in all_pred for m in per_image)
        min_enc = min(len(m) for per_image in all_enc for m in per_image)
        all_pred = self._truncate(all_pred, min_pred, generator)
        all_enc = self._truncate(all_enc, min_enc, generator)
        masks_pred = [torch.stack([all_pred[b][k] for b in range(batch_size)]) for k in range(self.npred)]
        masks_enc = [torch.stack([all_enc[b][k] for b in range(batch_size)]) for k in range(self.nenc)]
        return masks_enc, masks_pred
