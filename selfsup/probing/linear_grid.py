"""DINOv2's linear evaluation grid (``dinov2/eval/linear.py``): many linear heads on one feature pass.

One ``Linear`` (weight N(0, 0.01), bias 0, no BatchNorm) per ``(n_last_blocks, avgpool, lr)``: the
input is the class tokens of the last ``n`` blocks (block -n ... -1) concatenated, plus, with
``avgpool``, the patch-token mean of the last block. Each head has its own learning rate
(``lr_scale`` of its parameter group: ``lr * batch / 256`` with the schedule's ``base_lr: 1``); the
loss is the sum of the heads' cross-entropies; the head with the best validation top-1 is reported.

Backbones without a class token (the JEPA ViTs): the class token of a block is replaced by its
patch-token mean (what their average-pool head uses), and the ``avgpool`` variants, which would only
repeat the last block's mean, are dropped: 13 lrs x {1, 4} blocks = 26 heads instead of 52.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.probes.head import make_classifier
from selfsup.probing.features import FeatureSpec


def head_name(blocks: int, avgpool: bool, lr: float) -> str:
    return f"blocks{blocks}_avgpool{int(avgpool)}_lr{lr:.0e}"


class LinearGrid(nn.Module):
    """Config keys (``model.heads`` of ``configs/experiment/probe_linear_grid*.yaml``): ``lrs``,
    ``n_last_blocks``, ``avgpool``, ``classifier_init``, ``spec`` and ``num_classes`` (set at setup)."""

    requires = "pooled"

    def __init__(
        self, lrs: list[float], n_last_blocks: list[int], avgpool: list[bool], classifier_init: str, spec: FeatureSpec, num_classes: int
    ) -> None:
        super().__init__()
        if max(n_last_blocks) > spec.num_blocks:
            raise ValueError(f"the grid uses the last {max(n_last_blocks)} blocks; set features.blocks to at least that many")
        width = spec.dim // spec.num_blocks
        self.has_class_token = spec.has_class_token
        self.layout: dict[str, tuple[int, bool]] = {}
        self.lrs: dict[str, float] = {}
        heads = {}
        for blocks in n_last_blocks:
            for pool in avgpool:
                if pool and not spec.has_class_token:
                    continue
                for lr in lrs:
                    name = head_name(blocks, pool, lr)
                    self.layout[name], self.lrs[name] = (blocks, pool), float(lr)
                    heads[name] = make_classifier(width * (blocks + int(pool)), num_classes, classifier_init)
        self.heads = nn.ModuleDict(heads)

    def _inputs(self, features: dict[str, torch.Tensor]) -> dict[tuple[int, bool], torch.Tensor]:
        tokens = features["cls"] if self.has_class_token else features["mean"]  # [B, k, D]
        inputs = {}
        for blocks, pool in set(self.layout.values()):
            x = tokens[:, -blocks:].flatten(1)
            inputs[(blocks, pool)] = torch.cat([x, features["mean"][:, -1]], dim=1) if pool else x
        return inputs

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = self._inputs(features)
        return {name: head(inputs[self.layout[name]]) for name, head in self.heads.items()}

    def param_groups(self) -> list[dict]:
        return [{"name": n, "params": list(h.parameters()), "lr_scale": self.lrs[n]} for n, h in self.heads.items()]

    def primary(self, acc1: dict[str, float]) -> str:
        return max(acc1, key=lambda name: acc1[name])
