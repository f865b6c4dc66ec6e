"""One I-JEPA training step: ours against a straightforward re-implementation of the official step.

``ours``: timm blocks with fused attention (``F.scaled_dot_product_attention``), gathered masks,
``torch._foreach`` EMA, the predictor's last block for the target rows only. ``ours_all_rows``: the
same with ``target_rows_only=False`` (the whole last block, as the official code). ``naive``: the
official structure written plainly (explicit softmax attention, per-image gathers, a Python loop
over parameters for the EMA). Same sizes, same masks, same optimiser. Run as
``python -m selfsup.bench.pretrain_step --impl ours|ours_all_rows|naive``; prints JSON.
"""

from __future__ import annotations

import argparse
import json

import torch

from selfsup.bench.measure import add_step_arguments, synthetic_jepa_inputs, time_steps
from selfsup.models.ema import ema_update_
from selfsup.models.predictor import JEPAPredictor
from selfsup.models.vit import vit
from selfsup.objectives.ijepa import IJEPA
from selfsup.reference.ijepa import RefPredictor, RefViT, ref_ijepa_loss
from selfsup.training.optim import jepa_param_groups


def build(impl: str, size: str, img: int, patch: int, pred_depth: int):
    torch.manual_seed(0)
    ours = vit(size, img_size=img, patch_size=patch)
    pred = JEPAPredictor(embed_dim=ours.embed_dim, predictor_embed_dim=384, depth=pred_depth,
                         num_heads=ours.blocks[0].attn.num_heads, img_size=img, patch_size=patch,
                         target_rows_only=impl != "ours_all_rows")
    objective = IJEPA(ours, pred)
    if impl.startswith("ours"):
        return objective
    dim, heads, depth = ours.embed_dim, ours.blocks[0].attn.num_heads, len(ours.blocks)
    naive = torch.nn.Module()
    naive.encoder = RefViT(img, patch, dim, depth, heads)
    naive.target_encoder = RefViT(img, patch, dim, depth, heads).requires_grad_(False)
    naive.predictor = RefPredictor(img // patch, dim, 384, pred_depth, heads)
    naive.encoder.load_state_dict(objective.encoder.state_dict())
    naive.target_encoder.load_state_dict(objective.target_encoder.state_dict())
    naive.predictor.load_state_dict(objective.predictor.state_dict())
    return naive


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--impl", choices=("ours", "ours_all_rows", "naive"), required=True)
    add_step_arguments(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = build(a.impl, a.size, a.img, a.patch, a.pred_depth)
    modules = {"encoder": model.encoder, "predictor": model.predictor}
    optimizer = torch.optim.AdamW(jepa_param_groups(modules), lr=1e-4)
    images, masks = synthetic_jepa_inputs(a)

    def step(i: int) -> None:
        masks_enc, masks_pred = masks[i]
        if a.impl.startswith("ours"):
            loss = model(images, masks_enc, masks_pred).loss
        else:
            loss = ref_ijepa_loss(model.encoder, model.target_encoder, model.predictor, images, masks_enc, masks_pred)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            if a.impl.startswith("ours"):
                ema_update_(model.target_encoder, model.encoder, 0.996)
            else:  # the official loop
                for q, k in zip(model.encoder.parameters(), model.target_encoder.parameters()):
                    k.data.mul_(0.996).add_((1.0 - 0.996) * q.detach().data)

    result = time_steps(step, a.warmup, a.repeats)
    result.update(impl=a.impl, size=a.size, img=a.img, batch=a.batch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
