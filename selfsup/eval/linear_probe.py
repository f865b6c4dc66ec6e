"""A quick, deterministic linear probe on frozen, average-pooled encoder features.

Used by the learning checks and the results script: features are extracted once (no augmentation),
standardised with the training statistics, and a multinomial logistic regression is fitted
full-batch with L-BFGS. The full probing protocols (EP, attentive, DINOv2 grid) live elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract_pooled(encoder: nn.Module, batches: Iterable[dict], device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [N, D], labels [N])``: mean over patch tokens of ``encoder.forward_tokens``."""
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    for batch in batches:
        tokens = encoder.forward_tokens(batch["images"].to(device))
        feats.append(tokens.mean(dim=1).float().cpu())
        labels.append(batch["labels"].cpu())
    encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def fit_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> float:
    """Top-1 accuracy on ``val`` of an L2-regularised logistic regression fitted on ``train``."""
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True).clamp_min(1e-6)
    xt, xv = ((train_x - mean) / std).double(), ((val_x - mean) / std).double()
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    weight = torch.zeros(xt.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(xt @ weight + bias, train_y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return ((xv @ weight + bias).argmax(1) == val_y).double().mean().item()
