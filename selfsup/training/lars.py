"""LARS as the MAE / efficient-probing linear-probe code uses it (``util/lars.py``).

For every parameter with ``ndim > 1`` (weights, and EP's 3-D queries): ``g <- g + wd * p``, then
``g <- g * trust`` with ``trust = trust_coefficient * ||p|| / ||g||`` (1 when either norm is 0).
Biases and other 1-D parameters get neither weight decay nor the trust ratio. Then momentum SGD
without dampening: ``mu <- momentum * mu + g``; ``p <- p - lr * mu``. Five passes over a weight per step
(two norms, ``mu *= momentum``, ``mu += trust * g`` as one ``addcmul_``, ``p -= lr * mu``), six with weight
decay: each pass is a parallel region, which is what a small head's step pays for on a loaded CPU. The
``addcmul_`` rounds ``trust * g`` and the sum once (fused multiply-add), so ``mu`` can differ from the
two-op update in the last bit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


class LARS(torch.optim.Optimizer):
    """Config keys (``configs/optim/lars.yaml``): ``lr`` (overwritten every step by the schedule),
    ``weight_decay``, ``momentum``, ``trust_coefficient``."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9, trust_coefficient: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient))

    @staticmethod
    def _trust(p: torch.Tensor, update: torch.Tensor, coefficient: float) -> torch.Tensor:
        """``coefficient * ||p|| / ||update||`` as a 0-dim tensor (no host sync); 1 when either norm is 0."""
        param_norm, update_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
        one = torch.ones_like(param_norm)
        return torch.where(param_norm > 0.0, torch.where(update_norm > 0, coefficient * param_norm / update_norm, one), one)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"].mul_(group["momentum"])
                if p.ndim > 1:
                    # weight decay 0 adds nothing: skip the pass over the parameter
                    update = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
                    mu.addcmul_(update, self._trust(p, update, group["trust_coefficient"]))  # mu += trust * update
                else:
                    mu.add_(p.grad)
                p.add_(mu, alpha=-group["lr"])
        return loss


def lars(lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9, trust_coefficient: float = 0.001) -> Callable[..., LARS]:
    """``LARS`` waiting for its parameter groups: the ``_target_`` of ``configs/optim/lars.yaml``."""
    return functools.partial(LARS, lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
