"""DMT-JEPA cost: its training step against I-JEPA's, and its target-head computation against the
official all-patches one. Same model, batch, masks and optimiser in every case.

``--impl``:

- ``ijepa`` / ``dmt``: one full training step (forward, backward, AdamW, EMA) of ``IJEPA`` /
  ``DMTJEPA`` built on the same encoder and predictor.
- ``head-ours``: the DMT target path after the target encoder: neighbours and head only at the
  patches that are targets in the batch (``DMTJEPA.targets_at``).
- ``head-all``: the same modules at every patch, then gathered (``DMTJEPA.all_targets``): the
  official structure.
- ``head-official``: the released computation written plainly (``RefLocalAggHead``: explicit
  softmax, ``[B, N, 8, D]`` similarity gather, every patch), then gathered.

Run as ``python -m selfsup.bench.dmt_step --impl <impl>``; prints JSON.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from selfsup.bench.measure import add_step_arguments, synthetic_jepa_inputs, time_steps
from selfsup.masks.utils import apply_masks
from selfsup.models.ema import ema_update_
from selfsup.models.local_agg_head import LocalAggHead
from selfsup.models.predictor import JEPAPredictor
from selfsup.models.vit import vit
from selfsup.objectives.dmt_jepa import DMTJEPA
from selfsup.objectives.ijepa import IJEPA
from selfsup.reference.dmt_jepa import RefLocalAggHead
from selfsup.training.optim import jepa_param_groups

IMPLS = ("ijepa", "dmt", "head-ours", "head-all", "head-official")


def build(impl: str, size: str, img: int, patch: int, pred_depth: int) -> IJEPA:
    torch.manual_seed(0)
    encoder = vit(size, img_size=img, patch_size=patch)
    heads = encoder.blocks[0].attn.num_heads
    predictor = JEPAPredictor(embed_dim=encoder.embed_dim, predictor_embed_dim=384, depth=pred_depth,
                              num_heads=heads, img_size=img, patch_size=patch)
    if impl == "ijepa":
        return IJEPA(encoder, predictor)
    return DMTJEPA(encoder, predictor, LocalAggHead(encoder.embed_dim, heads))


def target_patches_per_image(masks: list, batch: int, tokens: int) -> float:
    """Mean number of distinct patches per image that are in some target block (the head's work)."""
    counts = []
    for _, masks_pred in masks:
        needed = torch.zeros(batch, tokens, dtype=torch.bool)
        for m in masks_pred:
            needed.scatter_(1, m, True)
        counts.append(needed.sum(1).float().mean())
    return float(torch.stack(counts).mean())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--impl", choices=IMPLS, required=True)
    add_step_arguments(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = build(a.impl, a.size, a.img, a.patch, a.pred_depth)
    grid = (a.img // a.patch, a.img // a.patch)
    images, masks = synthetic_jepa_inputs(a)

    if a.impl in ("ijepa", "dmt"):
        optimizer = torch.optim.AdamW(jepa_param_groups(model.optimized_modules()), lr=1e-4)

        def step(i: int) -> None:
            masks_enc, masks_pred = masks[i]
            model(images, masks_enc, masks_pred).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            for target, online in model.ema_pairs():
                ema_update_(target, online, 0.996)
    else:
        with torch.no_grad():
            h = F.layer_norm(model.target_encoder.forward_tokens(images), (model.encoder.embed_dim,))
        official = RefLocalAggHead(model.encoder.embed_dim, model.encoder.blocks[0].attn.num_heads, model.k, model.window)
        official.load_state_dict(model.target_head.state_dict())

        @torch.no_grad()
        def step(i: int) -> None:
            masks_pred = masks[i][1]
            if a.impl == "head-ours":
                model.targets_at(h, grid, masks_pred)
            elif a.impl == "head-all":
                apply_masks(model.all_targets(h, grid), masks_pred)
            else:
                apply_masks(official(h, loc=True, grid=grid, query_order="per_image"), masks_pred)

    result = time_steps(step, a.warmup, a.repeats)
    result.update(impl=a.impl, size=a.size, img=a.img, batch=a.batch, tokens=grid[0] * grid[1],
                  target_patches_per_image=target_patches_per_image(masks, a.batch, grid[0] * grid[1]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
