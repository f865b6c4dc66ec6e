"""One probe-head training step on cached frozen features (no backbone): the cost of the head alone.

The head is ``configs/probe/<name>.yaml`` wrapped as the probing runs wrap it (``ProbeHead``: pool,
BatchNorm1d(affine=False), Linear), trained with the efficient-probing protocol's optimiser (LARS) on
random "cached" tokens ``[batch, tokens, dim]``: forward, cross-entropy, backward, optimiser step.
``ep_official`` is EP with ``pool_then_project=false`` (W_v on every token, the official order).
Forward multiply-adds per image are counted with ``torch.utils.flop_counter`` (matmuls and
attention; one MAC = 2 flops). Run as ``python -m selfsup.bench.probe_heads --probe ep``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from selfsup.bench.measure import time_steps
from selfsup.config import instantiate
from selfsup.probes.head import ProbeHead
from selfsup.probing.features import FeatureSpec
from selfsup.probing.heads import build_pool
from selfsup.training.lars import LARS
from selfsup.training.optim import jepa_param_groups

PROBE_DIR = Path(__file__).resolve().parents[2] / "configs" / "probe"
VARIANTS = {"ep_official": ("ep", {"pool_then_project": False})}


def build_head(name: str, dim: int, tokens: int, classes: int) -> ProbeHead:
    """``ProbeHead`` of ``configs/probe/<name>.yaml`` (or a ``VARIANTS`` entry) for ``tokens`` patch tokens."""
    config, overrides = VARIANTS.get(name, (name, {}))
    cfg = OmegaConf.load(PROBE_DIR / f"{config}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    side = int(round(tokens**0.5))
    spec = FeatureSpec(dim, (side, tokens // side), 0, 1, False)
    return ProbeHead(build_pool(instantiate(cfg), spec), classes)


def forward_macs(head: torch.nn.Module, x: torch.Tensor) -> float:
    head.eval()
    with FlopCounterMode(display=False) as counter:  # (not under no_grad: its module tracker needs autograd)
        head(x)
    head.train()
    return counter.get_total_flops() / 2 / x.shape[0]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--probe", required=True)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--tokens", type=int, default=196)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    head = build_head(a.probe, a.dim, a.tokens, a.classes)
    x = torch.randn(a.batch, a.tokens, a.dim)
    y = torch.randint(0, a.classes, (a.batch,))
    macs = forward_macs(head, x[:2])
    optimizer = LARS(jepa_param_groups({"probe": head}), lr=0.01)

    def step(_: int) -> None:
        loss = F.cross_entropy(head(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result = time_steps(step, a.warmup, a.repeats)
    params = sum(p.numel() for p in head.parameters() if p.requires_grad)
    print(json.dumps({"probe": a.probe, "params": params, "macs_per_image": macs, "batch": a.batch, "tokens": a.tokens,
                      "dim": a.dim, "classes": a.classes, **result}))


if __name__ == "__main__":
    main()
