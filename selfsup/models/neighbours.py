"""Masked semantic neighbouring (DMT-JEPA, spec b.2): for a patch, the ``k`` most similar patches of
its spatial window, by cosine similarity of the (layer-normed) target-encoder features.

The official ``get_local_index`` supports square grids of 196, 256 or 36 tokens only; here the
candidate table is built for **any** ``H x W`` grid and cached per grid:

- ``neighbourhood="wrap"`` (official): the ``window x window`` window around the patch, rows modulo
  ``H`` and columns modulo ``W`` (toroidal), the patch itself removed. Candidates are listed in
  ascending flat (row-major) index, as the official ``nonzero()``; on a 14x14 grid patch 0 has
  ``[1, 13, 14, 15, 27, 182, 183, 195]``. On a grid smaller than the window the duplicates collapse.
- ``neighbourhood="clamp"``: no wrap-around; positions outside the image are dropped, so border
  patches have fewer candidates. The table is padded with the patch's own index and a ``valid``
  mask; when fewer than ``k`` candidates exist the missing slots are invalid and are left out of the
  aggregation's attention.

Similarities are computed in float32 even under bf16 autocast (the official code ranks in bf16,
where near-ties flip).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

NEIGHBOURHOODS = ("wrap", "clamp")


@dataclass(frozen=True)
class NeighbourTable:
    """Candidates of every patch of one grid (CPU tensors; see ``NeighbourTable.to``)."""

    index: torch.Tensor  # [N, C] flat indices of the candidates (padding: the patch itself)
    valid: torch.Tensor | None  # [N, C] bool, None when every candidate is real (wrap)
    spatial: torch.Tensor  # [N, C] bool: among the k spatially nearest candidates ("plain" neighbours)

    def to(self, device: torch.device) -> NeighbourTable:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return NeighbourTable(move(self.index), move(self.valid), move(self.spatial))


@dataclass(frozen=True)
class Selection:
    """The ``k`` chosen neighbours of ``M`` patches."""

    index: torch.Tensor  # [M, k] flat indices, most similar first (the official topk order)
    valid: torch.Tensor | None  # [M, k] bool, None when all are real
    similarity: torch.Tensor  # [M, k] float32 cosine similarity (-inf where invalid)
    spatial: torch.Tensor  # [M, k] bool: the chosen neighbour is also a plain spatial neighbour

    def stats(self) -> dict[str, torch.Tensor]:
        """Health signals: share of chosen neighbours that are plain spatial neighbours (1.0 = the
        features only encode position; ``k / candidates`` = chance), and their mean similarity."""
        keep = torch.ones_like(self.spatial) if self.valid is None else self.valid
        n = keep.sum().clamp_min(1)
        return {
            "neighbour_spatial_agreement": (self.spatial & keep).sum() / n,
            "neighbour_similarity": self.similarity.masked_fill(~keep, 0.0).sum() / n,
        }


def check_neighbourhood(k: int, window: int, neighbourhood: str) -> None:
    if neighbourhood not in NEIGHBOURHOODS:
        raise ValueError(f"objective.neighbourhood={neighbourhood!r}; valid: {', '.join(NEIGHBOURHOODS)}")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"objective.window={window}: the neighbourhood window must be odd and >= 3 (official: 3)")
    if not 1 <= k <= window * window - 1:
        raise ValueError(f"objective.k={k}: must be between 1 and window*window-1={window * window - 1}")


@lru_cache(maxsize=32)
def neighbour_table(grid: tuple[int, int], window: int, neighbourhood: str, k: int) -> NeighbourTable:
    """Candidate table of an ``H x W`` grid (see the module docstring). Raises when a wrapped grid is
    too small to offer ``k`` distinct neighbours."""
    check_neighbourhood(k, window, neighbourhood)
    height, width = grid
    r = window // 2
    rows: list[list[tuple[int, int]]] = []  # per patch: (flat index, squared distance), ascending index
    for i in range(height * width):
        row, col = divmod(i, width)
        found: dict[int, int] = {}
        for dr in range(-r, r + 1):
            for dc in range(-r, r + 1):
                rr, cc = row + dr, col + dc
                if neighbourhood == "wrap":
                    rr, cc = rr % height, cc % width
                elif not (0 <= rr < height and 0 <= cc < width):
                    continue
                j = rr * width + cc
                if j != i:
                    found[j] = min(found.get(j, dr * dr + dc * dc), dr * dr + dc * dc)
        rows.append(sorted(found.items()))
    count = window * window - 1 if neighbourhood == "clamp" else len(rows[0])
    if neighbourhood == "wrap" and count < k:
        raise ValueError(
            f"a {height}x{width} grid with a wrapped {window}x{window} window gives {count} distinct "
            f"neighbours, fewer than objective.k={k}; lower k or use a larger image"
        )
    index = torch.empty(height * width, count, dtype=torch.long)
    valid = torch.zeros(height * width, count, dtype=torch.bool)
    spatial = torch.zeros(height * width, count, dtype=torch.bool)
    for i, cands in enumerate(rows):
        index[i] = i
        for slot, (j, _) in enumerate(cands):
            index[i, slot], valid[i, slot] = j, True
        nearest = sorted(range(len(cands)), key=lambda s: (cands[s][1], s))[:k]  # stable: ties by index
        spatial[i, nearest] = True
    return NeighbourTable(index, None if bool(valid.all()) else valid, spatial)


def select_neighbours(
    features: torch.Tensor, images: torch.Tensor, patches: torch.Tensor, table: NeighbourTable, k: int
) -> Selection:
    """Top-``k`` candidates of patch ``patches[m]`` of image ``images[m]`` by float32 cosine similarity
    of ``features [B, N, D]``; returns a ``Selection`` over the ``M`` rows."""
    normed = F.normalize(features.float(), dim=-1)
    centre = normed[images, patches]  # [M, D]
    cand = table.index[patches]  # [M, C]
    sim = torch.stack([(normed[images, cand[:, c]] * centre).sum(-1) for c in range(cand.shape[1])], dim=1)
    valid = None if table.valid is None else table.valid[patches]
    if valid is not None:
        sim = sim.masked_fill(~valid, float("-inf"))
    top_sim, top = sim.topk(k, dim=-1)
    return Selection(
        index=cand.gather(1, top),
        valid=None if valid is None else valid.gather(1, top),
        similarity=top_sim,
        spatial=table.spatial[patches].gather(1, top),
    )
