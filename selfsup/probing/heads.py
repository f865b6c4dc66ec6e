"""Head sets: what a probe module trains on one shared backbone pass.

A head set is an ``nn.Module`` with ``requires`` (the ``FrozenFeatures.output`` it reads),
``forward(features) -> {head name: logits}``, ``param_groups()`` (with ``lr_scale`` / ``WD_exclude``
for ``WarmupCosineSchedule.apply``) and ``primary(acc1 per head)`` (the head to report).

- ``SingleProbe``: one ``ProbeHead`` (any pooling of ``configs/probe``) on the tokens.
- ``LinearGrid`` (``linear_grid.py``): DINOv2's grid of linear classifiers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from selfsup.probes.head import ProbeHead
from selfsup.probing.features import FeatureSpec
from selfsup.training.optim import jepa_param_groups

RUNTIME_KEYS = ("dim", "grid", "num_prefix_tokens")


def build_pool(factory: Callable[..., nn.Module], spec: FeatureSpec) -> nn.Module:
    """Call a ``configs/probe`` partial with the values it leaves to the features (``dim``, ``grid``, ...)."""
    runtime = {"dim": spec.dim, "grid": tuple(spec.grid), "num_prefix_tokens": spec.num_prefix_tokens}
    keywords = getattr(factory, "keywords", {})
    return factory(**{k: v for k, v in runtime.items() if k in keywords})


class SingleProbe(nn.Module):
    """Config keys (``model.heads`` of ``configs/model/probe.yaml``): ``pool`` (``${probe}``), ``norm``
    (batchnorm | none), ``classifier_init`` (default | normal), ``spec`` and ``num_classes`` (set at setup)."""

    requires = "tokens"

    def __init__(self, pool: Callable[..., nn.Module], norm: str, classifier_init: str, spec: FeatureSpec, num_classes: int) -> None:
        super().__init__()
        self.probe = ProbeHead(build_pool(pool, spec), num_classes, norm, classifier_init)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"probe": self.probe(features["tokens"])}

    def param_groups(self) -> list[dict]:
        return jepa_param_groups({"probe": self.probe})

    def primary(self, acc1: dict[str, float]) -> str:
        return "probe"
