"""I-JEPA as a plain ``nn.Module``: batch + masks -> loss (spec a.5). Knows nothing of Lightning.

::

    h = target_encoder(images)                   # [B, N, D], no grad, includes the encoder's final LN
    h = layer_norm(h)                            # extra parameter-free LN (eps 1e-5)
    h = apply_masks(h, masks_pred)               # [npred*B, Nt, D], mask-major
    z = encoder(images, masks_enc)               # [nenc*B, Nc, D], only context tokens are encoded
    z = predictor(z, masks_enc, masks_pred)      # [npred*nenc*B, Nt, D]
    loss = smooth_l1(z, h)                       # beta 1, mean over every element (or MSE)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.masks.utils import apply_masks, repeat_interleave_batch
from selfsup.models.predictor import JEPAPredictor
from selfsup.models.vit import JEPAViT

LOSSES = ("smooth_l1", "mse")


@dataclass
class JEPAOutput:
    """What one objective forward returns: the loss, and the tensors health monitors look at."""

    loss: torch.Tensor
    prediction: torch.Tensor  # [npred*nenc*B, Nt, D]
    target: torch.Tensor  # same shape, no grad
    target_tokens: torch.Tensor | None = None  # [B, N, D] target-encoder output (no grad), for probes/monitors
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


def regression_loss(kind: str, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, beta=1.0)
    if kind == "mse":
        return F.mse_loss(prediction, target)
    raise ValueError(f"objective.loss={kind!r}; valid: {', '.join(LOSSES)}")


class IJEPA(nn.Module):
    """Context encoder, EMA target encoder (a deep copy, frozen) and predictor.

    Config keys (``configs/objective/ijepa.yaml``): ``encoder`` (the backbone), ``predictor``,
    ``loss`` (smooth_l1 | mse).
    """

    def __init__(self, encoder: JEPAViT, predictor: JEPAPredictor, loss: str = "smooth_l1") -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"objective.loss={loss!r}; valid: {', '.join(LOSSES)}")
        self.loss = loss
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False).eval()

    # -- what the training loop needs to know --------------------------------------------------
    def optimized_modules(self) -> dict[str, nn.Module]:
        """Modules whose parameters the optimiser updates, in the official parameter-group order."""
        return {"encoder": self.encoder, "predictor": self.predictor}

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(target, online)`` pairs updated by EMA after each optimiser step."""
        return [(self.target_encoder, self.encoder)]

    def compile_forwards(self) -> None:
        """``torch.compile`` the three forwards in place (state-dict keys are unchanged)."""
        for encoder in (self.encoder, self.target_encoder):
            encoder.forward_tokens = torch.compile(encoder.forward_tokens)
        self.predictor.forward = torch.compile(self.predictor.forward)

    def train(self, mode: bool = True) -> IJEPA:
        super().train(mode)
        self.target_encoder.eval()  # the target never uses drop-path
        return self

    # -- the two places a variant changes (DMT-JEPA: selfsup/objectives/dmt_jepa.py) ---------------
    def targets_at(
        self, h: torch.Tensor, grid: tuple[int, int], masks_pred: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Targets of the target blocks from the normalised target features ``h [B, N, D]``:
        ``([npred*B, Nt, D], logs)``. I-JEPA: the features themselves."""
        return apply_masks(h, masks_pred), {}

    def context_features(self, z: torch.Tensor) -> torch.Tensor:
        """What the predictor sees of the encoded context ``[nenc*B, Nc, D]``. I-JEPA: ``z`` itself."""
        return z

    # -- the step --------------------------------------------------------------------------------
    @torch.no_grad()
    def forward_target(
        self, images: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``(targets [npred*nenc*B, Nt, D], target-encoder tokens [B, N, D], logs)``."""
        tokens = self.target_encoder.forward_tokens(images)
        h = F.layer_norm(tokens, (tokens.size(-1),))
        grid = self.target_encoder.grid_for(images.shape[-2], images.shape[-1])
        h, logs = self.targets_at(h, grid, masks_pred)
        return repeat_interleave_batch(h, images.shape[0], repeat=len(masks_enc)), tokens, logs

    def forward_context(
        self, images: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]
    ) -> torch.Tensor:
        z = self.context_features(self.encoder.forward_tokens(images, masks_enc))
        grid = self.encoder.grid_for(images.shape[-2], images.shape[-1])
        return self.predictor(z, masks_enc, masks_pred, grid)

    def forward(
        self, images: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]
    ) -> JEPAOutput:
        h, tokens, logs = self.forward_target(images, masks_enc, masks_pred)
        z = self.forward_context(images, masks_enc, masks_pred)
        return JEPAOutput(
            loss=regression_loss(self.loss, z, h), prediction=z, target=h, target_tokens=tokens, logs=logs
        )
