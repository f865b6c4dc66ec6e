"""Layer-wise learning-rate decay for ViT fine-tuning (BEiT / MAE / ViTDet convention).

Parameter ``p`` of a network containing a ViT with ``num_layers`` blocks gets a layer id:
position embedding and patch embedding (and class/register tokens) 0, ``blocks.i.*`` ``i + 1``,
everything else (final norm, necks, decode heads) ``num_layers + 1``. Its learning rate is
``base_lr * layer_decay ** (num_layers + 1 - layer_id)``. By default biases, 1-D parameters and the
position embedding get no weight decay (BEiT / MAE); ``no_decay`` replaces that rule (e.g. ViTDet's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from torch import nn

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBED = re.compile(r"(?:^|\.)(patch_embed|pos_embed|cls_token|reg_token)(?:\.|$)")


def vit_layer_id(name: str, num_layers: int) -> int:
    if match := _BLOCK.search(name):
        return int(match.group(1)) + 1
    if _EMBED.search(name):
        return 0
    return num_layers + 1


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or name.endswith("pos_embed")


def layer_decay_param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    num_layers: int,
    layer_decay: float,
    weight_decay: float,
    no_decay: Callable[[str, nn.Parameter], bool] | None = None,
) -> list[dict]:
    """Parameter groups with an ``lr_scale`` each (multiply the base LR by it every step).

    ``no_decay(name, param)`` says which parameters get weight decay 0 (default: the BEiT / MAE rule).
    """
    exempt = no_decay or _no_decay
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        layer = vit_layer_id(name, num_layers)
        no_decay_here = exempt(name, param)
        group = groups.setdefault(
            (layer, no_decay_here),
            {
                "name": f"layer{layer}{'_no_decay' if no_decay_here else ''}",
                "params": [],
                "weight_decay": 0.0 if no_decay_here else weight_decay,
                "lr_scale": layer_decay ** (num_layers + 1 - layer),
            },
        )
        group["params"].append(param)
    return [groups[k] for k in sorted(groups)]
