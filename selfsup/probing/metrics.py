"""Top-k accuracy counting and best-epoch tracking for probe heads."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [hits[:, : min(k, top.shape[1])].any(dim=1).sum() for k in ks]


@dataclass
class BestTracker:
    """Per head: the best validation top-1 over epochs (with its top-5 and epoch) and the last one."""

    best: dict[str, dict[str, float]] = field(default_factory=dict)
    last: dict[str, dict[str, float]] = field(default_factory=dict)

    def update(self, epoch: int, results: dict[str, dict[str, float]]) -> None:
        for name, res in results.items():
            self.last[name] = {**res, "epoch": float(epoch)}
            if name not in self.best or res["acc1"] > self.best[name]["acc1"]:
                self.best[name] = {**res, "epoch": float(epoch)}

    def state_dict(self) -> dict:
        return {"best": self.best, "last": self.last}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.last = dict(state.get("best", {})), dict(state.get("last", {}))
