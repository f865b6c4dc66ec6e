"""Drawing a probe's attention maps (EP: one per query) over the input images.

``render_attention_maps`` writes one PNG: a row per image with the image, an "all queries" panel
(each pixel coloured by the query that attends to it most, brightness = that attention, as the EP
paper's figure) and one heat map per query (up to ``max_queries``), upsampled bilinearly to the image.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from selfsup.training.files import atomic_write  # noqa: E402


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, Q, h, w] -> [B, Q, H, W]``, each map rescaled to [0, 1]."""
    up = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)
    lo = up.flatten(2).min(dim=2).values[..., None, None]
    hi = up.flatten(2).max(dim=2).values[..., None, None]
    return (up - lo) / (hi - lo).clamp_min(1e-12)


def query_colours(maps: torch.Tensor) -> np.ndarray:
    """``[Q, H, W]`` attention -> ``[H, W, 3]``: the colour of the strongest query, scaled by its strength."""
    strength, winner = maps.max(dim=0)
    palette = plt.get_cmap("tab20" if maps.shape[0] > 10 else "tab10")
    rgb = np.asarray(palette(winner.numpy() % palette.N))[..., :3]
    return rgb * strength.numpy()[..., None]


def render_attention_maps(images: torch.Tensor, maps: torch.Tensor, path: str | os.PathLike, max_queries: int = 32, title: str = "") -> Path:
    """``images``: ``[B, 3, H, W]`` in [0, 1]; ``maps``: ``[B, Q, h, w]`` attention on the token grid."""
    b, q = maps.shape[:2]
    shown = min(q, max_queries)
    up = upsample(maps, images.shape[-2:])
    cols = 2 + shown
    fig, axes = plt.subplots(b, cols, figsize=(1.3 * cols, 1.3 * b), squeeze=False)
    for i in range(b):
        img = images[i].permute(1, 2, 0).clamp(0, 1).numpy()
        axes[i, 0].imshow(img)
        axes[i, 1].imshow(0.35 * img + 0.65 * query_colours(up[i]))
        for j in range(shown):
            axes[i, 2 + j].imshow(img)
            axes[i, 2 + j].imshow(up[i, j].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                axes[i, 2 + j].set_title(f"q{j}", fontsize=7)
    axes[0, 0].set_title("image", fontsize=7)
    axes[0, 1].set_title("all queries", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)
    return path
