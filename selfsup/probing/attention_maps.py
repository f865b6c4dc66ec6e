"""A probe's attention maps (EP: one per query) over the input images: computed and drawn.

Shared by the ``probe_attention_maps`` callback (``selfsup/callbacks/attention_maps.py``) and
``tools/visualize.py attention checkpoint=<probe .ckpt>``:

- ``query_maps``: the pooling's ``attention_maps(tokens) -> [B, Q, T]`` (EP: ``softmax_T((q * D^-0.5) . x)``,
  spec 3.7) on the patch grid, ``[B, Q, h, w]`` (prefix tokens such as a class token dropped);
- ``attention_maps_picture``: a row per image with the image, an "all queries" panel (each pixel
  coloured by the query that attends to it most, brightness = that attention, as the EP paper's
  figure) and one heat map per query (up to ``max_queries``), upsampled bilinearly to the image.
  Every panel is ``panel`` pixels square: the picture is ``(2 + shown) * panel`` by ``B * panel``.
- ``render_attention_maps``: that picture written as a PNG.
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
from torch import nn  # noqa: E402

from selfsup.probing.features import FeatureSpec  # noqa: E402
from selfsup.viz.canvas import save_png  # noqa: E402

DPI = 80
PANEL = 104  # pixels per panel of the callback's pictures (1.3 inch at 80 dpi)


@torch.no_grad()
def query_maps(pool: nn.Module, tokens: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """``tokens [B, T, D]`` -> ``[B, Q, h, w]`` float32 on the CPU: the pooling's attention over the
    patch tokens (the prefix tokens of ``spec`` are dropped), in eval mode."""
    was_training = pool.training
    pool.eval()
    try:
        maps = pool.attention_maps(tokens).float().cpu()[..., spec.num_prefix_tokens :]
    finally:
        pool.train(was_training)
    return maps.reshape(maps.shape[0], maps.shape[1], *spec.grid)


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


def attention_maps_picture(
    images: torch.Tensor, maps: torch.Tensor, max_queries: int = 32, title: str = "", panel: int = PANEL
) -> np.ndarray:
    """``images``: ``[B, 3, H, W]`` in [0, 1]; ``maps``: ``[B, Q, h, w]`` attention on the token grid ->
    ``uint8 [B * panel, (2 + min(Q, max_queries)) * panel, 3]``."""
    b, q = maps.shape[:2]
    shown = min(q, max_queries)
    up = upsample(maps, images.shape[-2:])
    cols = 2 + shown
    fig, axes = plt.subplots(b, cols, figsize=(cols * panel / DPI, b * panel / DPI), dpi=DPI, squeeze=False)
    try:
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
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)


def render_attention_maps(images: torch.Tensor, maps: torch.Tensor, path: str | os.PathLike, max_queries: int = 32, title: str = "") -> Path:
    """``attention_maps_picture`` written atomically to ``path`` (parent folders created)."""
    path = Path(path)
    save_png(attention_maps_picture(images, maps, max_queries, title), path)
    return path
