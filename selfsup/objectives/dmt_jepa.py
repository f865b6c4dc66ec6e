"""DMT-JEPA (discriminative masked targets) as a plain ``nn.Module``: I-JEPA plus a local aggregation
head on both paths (spec b). Everything else -- encoders, predictor, masks, loss, EMA -- is I-JEPA's.

::

    h = layer_norm(target_encoder(images))            # [B, N, D], no grad (as I-JEPA)
    for every patch i that is a target in this batch (not all N, as the official code does):
        P_i = top-k of the window around i by float32 cosine similarity of h   (selfsup/models/neighbours.py)
        t_i = target_head.local(query = mean_n h[b, n], keys = h[b, P_i])       # EMA head, [D]
    targets = t at masks_pred                         # [npred*nenc*B, Nt, D]
    z = head.global(encoder(images, masks_enc))       # trained head over the context tokens, length kept
    loss = smooth_l1(predictor(z, masks), targets)

``target_query_order``: ``per_image`` (the paper's Eq. 4: each patch is queried with its own image's
mean token) | ``official_repeat`` (the released ``q0.repeat(N, 1, 1)``: the row of patch ``n`` of
image ``b`` gets the mean token of image ``(b * N + n) % B``, mixing images when B > 1).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from selfsup.models.local_agg_head import LocalAggHead, check_attention
from selfsup.models.neighbours import NeighbourTable, check_neighbourhood, neighbour_table, select_neighbours
from selfsup.models.predictor import JEPAPredictor
from selfsup.models.vit import JEPAViT
from selfsup.objectives.ijepa import IJEPA

QUERY_ORDERS = ("per_image", "official_repeat")


class DMTJEPA(IJEPA):
    """I-JEPA with the trained context head ``head`` and its EMA copy ``target_head`` (official names
    ``LocalAggHead`` / ``target_LocalAggHead``; both are submodules, so both are in checkpoints).

    Config keys (``configs/objective/dmt_jepa.yaml``): ``encoder``, ``predictor``, ``head``
    (``LocalAggHead``), ``k`` (neighbours kept, official ``patch_k_num`` 4), ``window`` (official
    ``patch_k_size`` 3), ``neighbourhood`` (wrap | clamp), ``context_attention`` / ``target_attention``
    (cross | self; official ``context_attn`` / ``target_attn``), ``target_query_order``
    (per_image | official_repeat), ``loss`` (smooth_l1 | mse).
    """

    def __init__(
        self,
        encoder: JEPAViT,
        predictor: JEPAPredictor,
        head: LocalAggHead,
        k: int = 4,
        window: int = 3,
        neighbourhood: str = "wrap",
        context_attention: str = "cross",
        target_attention: str = "cross",
        target_query_order: str = "per_image",
        loss: str = "smooth_l1",
    ) -> None:
        super().__init__(encoder, predictor, loss)
        check_neighbourhood(k, window, neighbourhood)
        check_attention(context_attention, "objective.context_attention")
        check_attention(target_attention, "objective.target_attention")
        if target_query_order not in QUERY_ORDERS:
            raise ValueError(f"objective.target_query_order={target_query_order!r}; valid: {', '.join(QUERY_ORDERS)}")
        if head.embed_dim != encoder.embed_dim:
            raise ValueError(f"objective.head.embed_dim={head.embed_dim} differs from the encoder width {encoder.embed_dim}")
        self.k, self.window, self.neighbourhood = k, window, neighbourhood
        self.context_attention, self.target_attention = context_attention, target_attention
        self.target_query_order = target_query_order
        self.head = head
        self.target_head = copy.deepcopy(head).requires_grad_(False).eval()
        self._tables: dict[tuple, NeighbourTable] = {}

    # -- what the training loop needs to know --------------------------------------------------
    def optimized_modules(self) -> list[dict[str, nn.Module]]:
        """The official ``init_opt`` order: the I-JEPA groups, then the head's decay / no-decay groups."""
        return [super().optimized_modules(), {"head": self.head}]

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Encoder and head, with the same momentum (the official loop updates both)."""
        return [*super().ema_pairs(), (self.target_head, self.head)]

    def compile_forwards(self) -> None:
        super().compile_forwards()
        self.head.forward_global = torch.compile(self.head.forward_global)

    def train(self, mode: bool = True) -> DMTJEPA:
        super().train(mode)
        self.target_head.eval()
        return self

    # -- targets ---------------------------------------------------------------------------------
    def neighbour_table(self, grid: tuple[int, int], device: torch.device) -> NeighbourTable:
        key = (grid, str(device))
        if key not in self._tables:
            self._tables[key] = neighbour_table(grid, self.window, self.neighbourhood, self.k).to(device)
        return self._tables[key]

    def local_targets(
        self, h: torch.Tensor, grid: tuple[int, int], images: torch.Tensor, patches: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Target-head output ``[M, D]`` at the patches ``(images[m], patches[m])`` of ``h [B, N, D]``."""
        batch, n = h.shape[:2]
        if n != grid[0] * grid[1]:
            raise ValueError(f"{n} target tokens for a {grid[0]}x{grid[1]} grid")
        chosen = select_neighbours(h, images, patches, self.neighbour_table(grid, h.device), self.k)
        mean = h.mean(dim=1)  # [B, D]: the image's mean target token x_t
        owner = images if self.target_query_order == "per_image" else (images * n + patches) % batch
        keys = h[images.unsqueeze(1), chosen.index]  # [M, k, D]: raw (not unit-norm) neighbour features
        out = self.target_head.forward_local(mean[owner], keys, self.target_attention, chosen.valid)
        return out, chosen.stats()

    def targets_at(
        self, h: torch.Tensor, grid: tuple[int, int], masks_pred: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The head runs once per distinct (image, patch) that is a target in this batch."""
        batch, n = h.shape[:2]
        needed = torch.zeros(batch, n, dtype=torch.bool, device=h.device)
        for m in masks_pred:
            needed.scatter_(1, m, True)
        images, patches = needed.nonzero(as_tuple=True)
        out, logs = self.local_targets(h, grid, images, patches)
        row = torch.full((batch, n), -1, dtype=torch.long, device=h.device)
        row[images, patches] = torch.arange(len(images), device=h.device)
        return torch.cat([out[row.gather(1, m)] for m in masks_pred], dim=0), logs

    def all_targets(self, h: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The official computation: the head at every patch, ``[B, N, D]`` (used to check
        ``targets_at`` and by the benchmark)."""
        batch, n = h.shape[:2]
        images, patches = torch.arange(batch, device=h.device).repeat_interleave(n), torch.arange(n, device=h.device).repeat(batch)
        return self.local_targets(h, grid, images, patches)[0].view(batch, n, -1)

    # -- context ---------------------------------------------------------------------------------
    def context_features(self, z: torch.Tensor) -> torch.Tensor:
        return self.head.forward_global(z, self.context_attention)

