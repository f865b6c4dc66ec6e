"""Parameter groups of a detector with a ViT backbone: layer-wise LR decay and a weight-decay rule.

``no_weight_decay``:

* ``vitdet`` -- detectron2's ViTDet recipe (``get_default_optimizer_params(weight_decay_norm=0)``
  with ``overrides={"pos_embed": {"weight_decay": 0}}``): no decay for the parameters of
  ``torch.nn.LayerNorm`` modules (the ViT's) and the position embedding; everything else is decayed,
  biases and the channel LayerNorms of the pyramid and heads included (detectron2's ``LayerNorm``
  class is not a ``torch.nn.LayerNorm``, so its norm rule does not reach them).
* ``mae`` -- BEiT / MAE fine-tuning: no decay for biases, 1-D parameters and the position embedding.
"""

from __future__ import annotations

from timm.layers import LayerNorm2d
from torch import nn

from selfsup.training.layer_decay import layer_decay_param_groups

NO_WEIGHT_DECAY = ("vitdet", "mae")


def vitdet_exempt_names(model: nn.Module) -> set[str]:
    """Names of the parameters ViTDet does not weight-decay: ``nn.LayerNorm`` params (not channel
    LayerNorms) and ``pos_embed``."""
    names = {name for name, _ in model.named_parameters() if name.endswith("pos_embed")}
    for module_name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) and not isinstance(module, LayerNorm2d):
            names.update(f"{module_name}.{p}" if module_name else p for p, _ in module.named_parameters(recurse=False))
    return names


def detection_param_groups(model: nn.Module, num_layers: int, layer_decay: float, weight_decay: float, no_weight_decay: str) -> list[dict]:
    """``layer_decay_param_groups`` of ``model`` (``lr_scale`` per group) with the chosen decay rule."""
    if no_weight_decay not in NO_WEIGHT_DECAY:
        raise ValueError(f"model.no_weight_decay={no_weight_decay!r}; valid: {', '.join(NO_WEIGHT_DECAY)}")
    rule = None
    if no_weight_decay == "vitdet":
        exempt = vitdet_exempt_names(model)
        rule = lambda name, param: name in exempt  # noqa: E731
    return layer_decay_param_groups(model.named_parameters(), num_layers, layer_decay, weight_decay, no_decay=rule)
