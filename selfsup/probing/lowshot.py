"""Low-shot training subsets: fixed, seeded, stratified (or read from a file).

``LowShot()`` (nothing set) is the whole training set; ``LowShot(fraction=0.01)`` keeps ``max(1, round(0.01 * n_c))`` images of every class ``c``;
``LowShot(per_class=5)`` keeps 5 (or all, if fewer); ``LowShot(file=...)`` keeps the images whose
file names are listed one per line (e.g. SimCLR's ImageNet ``1percent.txt`` / ``10percent.txt``).
The choice within a class is a function of ``(seed, class index)`` and the sorted file list only, so
the split is the same on every machine, process and resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from selfsup.utils.seeding import seeded_generator


@dataclass
class LowShot:
    """Config keys (``data.lowshot``): ``fraction``, ``per_class``, ``file``, ``seed`` (at most one of the first three)."""

    fraction: float | None = None
    per_class: int | None = None
    file: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        given = [k for k in ("fraction", "per_class", "file") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"data.lowshot: set at most one of fraction, per_class, file (got {given})")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"data.lowshot.fraction={self.fraction} must be in (0, 1]")
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"data.lowshot.per_class={self.per_class} must be >= 1")

    @property
    def active(self) -> bool:
        return self.fraction is not None or self.per_class is not None or self.file is not None

    def select(self, samples: list[tuple[Path, int]]) -> list[int]:
        """Sorted indices into ``samples`` (``(path, label)`` pairs) of the subset."""
        if not self.active:
            return list(range(len(samples)))
        if self.file is not None:
            wanted = {line.strip().split("/")[-1] for line in Path(self.file).read_text().splitlines() if line.strip()}
            chosen = [i for i, (path, _) in enumerate(samples) if Path(path).name in wanted]
            if not chosen:
                raise ValueError(f"data.lowshot.file={self.file}: none of its {len(wanted)} names is in the training set")
            return chosen
        by_class: dict[int, list[int]] = {}
        for i, (_, label) in enumerate(samples):
            by_class.setdefault(label, []).append(i)
        chosen = []
        for label, indices in sorted(by_class.items()):
            keep = self.per_class if self.per_class is not None else max(1, round(self.fraction * len(indices)))
            order = torch.randperm(len(indices), generator=seeded_generator(self.seed, label)).tolist()
            chosen += [indices[j] for j in order[: min(keep, len(indices))]]
        return sorted(chosen)


class SubsetSource:
    """An image source restricted to ``indices`` (``load`` / ``len`` / ``classes`` / ``samples``)."""

    def __init__(self, source, indices: list[int]) -> None:
        self.source = source
        self.indices = indices
        self.classes = source.classes
        self.samples = [source.samples[i] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> tuple[Image.Image, int]:
        return self.source.load(self.indices[index])
