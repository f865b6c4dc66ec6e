"""``tools/visualize.py attention checkpoint=<probe .ckpt>``: a trained probe's query maps over images.

For ``num_images`` validation images of the probe run's data (``data.*`` of its saved config, through
its validation transform, evenly spaced over the split as the other pictures): the image, all
queries (each pixel in the colour of its strongest query) and one map per query (up to
``max_queries``), drawn by the ``probe_attention_maps`` callback's code
(``selfsup.probing.attention_maps``): ``(2 + shown) * panel`` by ``num_images * panel`` pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.config import instantiate
from selfsup.probing.attention_maps import attention_maps_picture, query_maps
from selfsup.probing.trained import QueryProbe, load_query_probe
from selfsup.viz.canvas import normalization_of
from selfsup.viz.images import sample_images


def probe_images(probe: QueryProbe, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(normalised [count, 3, H, W], the same in [0, 1])`` from the probe run's validation split."""
    data = instantiate(probe.config.data)
    images, _ = sample_images(data, count)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalization_of(data.val_transform or data.train_transform))
    return images, (images * std + mean).clamp(0, 1)


def title_of(probe: QueryProbe, path: str | Path) -> str:
    return f"{type(probe.pool).__name__}, {Path(path).name}, epoch {probe.epoch}"


def probe_attention_picture(
    path: str | Path, checkpoint: dict[str, Any], overrides: list[str], num_images: int, max_queries: int, panel: int
) -> np.ndarray:
    """The picture of the module docstring for the probe checkpoint ``checkpoint`` read from ``path``."""
    probe = load_query_probe(path, checkpoint, overrides)
    images, shown = probe_images(probe, num_images)
    maps = query_maps(probe.pool, probe.features(images)["tokens"], probe.spec(tuple(images.shape[-2:])))
    return attention_maps_picture(shown, maps, max_queries, title_of(probe, path), panel)
