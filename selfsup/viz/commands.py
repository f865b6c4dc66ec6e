"""What ``tools/visualize.py <masks|attention|pca> [key=value ...]`` does.

Options (any other ``key=value`` is a Hydra override of ``configs/train.yaml``, e.g.
``experiment=dmt_jepa``, ``data=imagefolder data.root=/path``, ``mask.min_keep=4``):

- ``out``: the PNG to write (default ``<kind>.png``);
- ``num_images`` (4), ``panel`` (pixels per panel, 128), ``seed`` (0);
- masks: ``draws`` (images drawn for the frequency maps, 2000); both sampler modes are shown;
- attention, pca: ``checkpoint`` (our ``.ckpt``, a backbone ``.safetensors``, an official
  ``.pth.tar``; ``none`` = random initialisation of the configured backbone), ``encoder``
  (target_encoder | encoder), ``num_heads`` (only for an official checkpoint of a non-standard width).
- attention with a probe checkpoint (``checkpoint=outputs/probe_ep/<run>/checkpoints/last.ckpt``): the
  probe's query maps (``selfsup/viz/probe.py``) on the backbone and data of the probe run's saved
  config; ``max_queries`` (32) maps per image; other ``key=value`` words change keys of that saved
  config (``backbone.checkpoint=...`` when the backbone file moved, ``data.root=...``).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from selfsup.config import CONFIG_DIR, ConfigError, instantiate
from selfsup.masks.multiblock import MODES
from selfsup.models.from_file import encoder_from_file
from selfsup.models.vit import JEPAViT
from selfsup.probing.trained import is_probe_checkpoint
from selfsup.training.checkpoint import CheckpointError, read_checkpoint
from selfsup.viz.attention import EncoderAttention
from selfsup.viz.canvas import save_png
from selfsup.viz.figures import attention_figure, masks_figure, pca_figure
from selfsup.viz.images import sample_images
from selfsup.viz.probe import probe_attention_picture

KINDS = ("masks", "attention", "pca")
OPTIONS = {"out": None, "num_images": 4, "panel": 128, "seed": 0, "draws": 2000, "checkpoint": "none",
           "encoder": "target_encoder", "num_heads": None, "max_queries": 32}


def parse(args: list[str]) -> tuple[dict, list[str]]:
    """``key=value`` words -> ``(options, hydra overrides)``; a later word overrides an earlier one."""
    options, overrides = dict(OPTIONS), {}
    for word in args:
        if "=" not in word:
            raise SystemExit(f"expected key=value, got {word!r}; options: {', '.join(OPTIONS)} or config overrides")
        key, value = word.split("=", 1)
        if key in OPTIONS:
            options[key] = value
        else:
            overrides[key] = value
    for key in ("num_images", "panel", "seed", "draws", "max_queries"):
        options[key] = int(options[key])
    if options["num_heads"] not in (None, "null"):
        options["num_heads"] = int(options["num_heads"])
    return options, [f"{k}={v}" for k, v in overrides.items()]


def compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra.compose("train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.run_dir = "."  # no run: nothing is written there
    return cfg


def _checkpoint(options: dict) -> str | None:
    value = options["checkpoint"]
    return None if value in (None, "", "none", "null") else value


def _probe_checkpoint(kind: str, options: dict) -> dict | None:
    """The checkpoint when ``checkpoint=`` is a probe run's (``ProbeModule``); None otherwise."""
    path = _checkpoint(options)
    if path is None:
        return None
    if not Path(path).expanduser().is_file():
        raise CheckpointError(f"checkpoint={path} does not exist")
    if not path.endswith(".ckpt"):
        return None
    checkpoint = read_checkpoint(Path(path).expanduser())
    if not is_probe_checkpoint(checkpoint):
        return None
    if kind != "attention":
        backbone = (checkpoint.get("config") or {}).get("backbone", {}).get("checkpoint")
        raise ConfigError(
            f"{path} is a probe checkpoint (heads only); '{kind}' needs an encoder: pass its backbone, "
            f"checkpoint={backbone}, or use 'attention' for the probe's query maps"
        )
    return checkpoint


def _encoder(options: dict, cfg: DictConfig) -> JEPAViT:
    path = _checkpoint(options)
    if path is None:
        torch.manual_seed(options["seed"])
        return instantiate(cfg.backbone)
    return encoder_from_file(path, options["encoder"], options["num_heads"])


def _random_like(encoder: JEPAViT, seed: int) -> JEPAViT:
    torch.manual_seed(seed)
    kwargs = encoder.timm_kwargs()
    return JEPAViT(img_size=kwargs["img_size"], patch_size=kwargs["patch_size"], embed_dim=kwargs["embed_dim"],
                   depth=kwargs["depth"], num_heads=kwargs["num_heads"], mlp_ratio=kwargs["mlp_ratio"],
                   qkv_bias=kwargs["qkv_bias"])


def _data(cfg: DictConfig, encoder: JEPAViT, options: dict) -> tuple[torch.Tensor, np.ndarray]:
    cfg = cfg.copy()
    size = encoder.base_grid[0] * encoder.patch_size  # the encoder's training resolution
    with open_dict(cfg):
        cfg.data.image_size = size
    return sample_images(instantiate(cfg.data), options["num_images"])


def render(kind: str, args: list[str]) -> tuple[Path, np.ndarray]:
    """Build the picture ``kind`` from ``args``; write it; return ``(path, picture)``."""
    if kind not in KINDS:
        raise SystemExit(f"unknown picture {kind!r}; valid: {', '.join(KINDS)}")
    options, overrides = parse(args)
    out = Path(options["out"] or f"{kind}.png")
    probe = _probe_checkpoint(kind, options)
    if probe is not None:
        picture = probe_attention_picture(Path(options["checkpoint"]).expanduser(), probe, overrides,
                                          options["num_images"], options["max_queries"], options["panel"])
        save_png(picture, out)
        return out, picture
    cfg = compose(overrides)
    if kind == "masks":
        images, pictures = sample_images(instantiate(cfg.data), options["num_images"])
        samplers = {}
        for mode in MODES:
            node = OmegaConf.merge(cfg.mask, {"mode": mode})
            samplers[mode] = instantiate(node)
        picture = masks_figure(pictures, samplers, options["draws"], options["panel"], options["seed"])
    else:
        encoder = _encoder(options, cfg).eval()
        images, pictures = _data(cfg, encoder, options)
        grid = encoder.grid_for(*images.shape[-2:])
        name = "checkpoint" if _checkpoint(options) else "random init"
        if kind == "attention":
            picture = attention_figure(images, pictures, {name: EncoderAttention(encoder)}, grid, options["panel"])
        else:
            tokens = {name: _tokens(encoder, images)}
            if _checkpoint(options):
                tokens["random init"] = _tokens(_random_like(encoder, options["seed"]).eval(), images)
            picture = pca_figure(pictures, tokens, grid, options["panel"])
    save_png(picture, out)
    return out, picture


def _tokens(encoder: JEPAViT, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder.forward_tokens(images)
