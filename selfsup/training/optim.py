"""Parameter groups as the official ``init_opt``: weight decay on weights, none on biases and 1-D params.

For modules ``{encoder, predictor}`` the groups are, in order: encoder-decay, predictor-decay,
encoder-no-decay, predictor-no-decay. An objective with more modules passes a list of such dicts,
each contributing its decayed then its no-decay groups: DMT-JEPA's ``[{encoder, predictor}, {head}]``
gives the official ``init_opt`` order (the head's two groups appended after the I-JEPA four).
A parameter is excluded from decay iff ``'bias' in name or p.ndim == 1`` -- so LayerNorm weights
are excluded and the 3-D ``mask_token`` **is** decayed, exactly as the official code (timm's
``param_groups_weight_decay`` would differ there). Frozen parameters (the sin-cos position
embeddings) are left out: they never have gradients.
"""

from __future__ import annotations

from torch import nn


def is_no_decay(name: str, ndim: int) -> bool:
    return "bias" in name or ndim == 1


def jepa_param_groups(modules: dict[str, nn.Module] | list[dict[str, nn.Module]]) -> list[dict]:
    """Decayed groups for every module of a dict, then its ``WD_exclude`` groups (weight decay 0);
    for a list of dicts, the groups of each dict in turn."""
    if isinstance(modules, (list, tuple)):
        return [group for stage in modules for group in jepa_param_groups(stage)]
    decay, no_decay = [], []
    for module_name, module in modules.items():
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        decay.append(
            {
                "name": f"{module_name}",
                "params": [p for n, p in params if not is_no_decay(n, p.ndim)],
                "WD_exclude": False,
            }
        )
        no_decay.append(
            {
                "name": f"{module_name}_no_decay",
                "params": [p for n, p in params if is_no_decay(n, p.ndim)],
                "WD_exclude": True,
                "weight_decay": 0.0,
            }
        )
    return [g for g in decay + no_decay if g["params"]]


def apply_lr_wd(optimizer, lr: float, wd: float) -> None:
    """Overwrite the learning rate of every group and the weight decay of the decayed ones."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if not group.get("WD_exclude", False):
            group["weight_decay"] = wd
