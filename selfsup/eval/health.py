"""Representation-health metrics of a JEPA run (pure functions on tensors).

- ``rankme``: effective rank of a feature matrix (Garrido et al., ICML 2023): with the singular
  values ``s`` of ``Z [n, d]`` (not centred), ``p = s / sum(s) + eps`` and ``exp(-sum p log p)``.
  Between 1 (every sample maps to one direction) and ``min(n, d)``.
- ``normalized_std``: mean over dimensions of the standard deviation of the L2-normalised features
  (lightly's ``std_of_l2_normalized``). ``1/sqrt(d)`` for features spread over the sphere, 0 when
  every sample has the same direction (collapse).
- ``cosine``: mean cosine similarity of predictions and targets, row by row.
- ``loss_per_block``: the objective's loss on each target block separately.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.objectives.ijepa import regression_loss

RANKME_EPS = 1e-7


def rankme(features: torch.Tensor, eps: float = RANKME_EPS) -> float:
    """Effective rank of ``features [n, d]`` (float64 SVD)."""
    s = torch.linalg.svdvals(features.detach().double())
    p = s / s.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def normalized_std(features: torch.Tensor) -> float:
    """Mean per-dimension std (unbiased) of the L2-normalised ``features [n, d]``."""
    z = F.normalize(features.detach().double(), dim=-1)
    return float(z.std(dim=0).mean())


def cosine(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean cosine similarity of ``prediction`` and ``target`` (``[..., D]``, matching shapes)."""
    return float(F.cosine_similarity(prediction.detach().float(), target.detach().float(), dim=-1).mean())


def loss_per_block(prediction: torch.Tensor, target: torch.Tensor, npred: int, kind: str) -> list[float]:
    """The loss of each of the ``npred`` target blocks; rows are block-major (``[npred * nenc * B, Nt, D]``,
    the layout of ``JEPAOutput``)."""
    pred = prediction.detach().float().chunk(npred, dim=0)
    targ = target.detach().float().chunk(npred, dim=0)
    return [float(regression_loss(kind, p, t)) for p, t in zip(pred, targ)]
