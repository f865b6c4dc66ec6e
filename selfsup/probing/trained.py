"""A trained probe back from its checkpoint, with the frozen backbone it was trained on (for tools).

A probe checkpoint (``<run_dir>/checkpoints/*.ckpt`` of a ``ProbeModule`` run) holds the heads
(``state_dict`` under ``heads.*``), a fingerprint of the backbone weights (``probe.backbone_fingerprint``)
and the run's resolved config (``config``), but not the backbone. ``load_query_probe`` rebuilds:

- the features from the run's ``model.features`` (``blocks``, ``final_norm``, ``tokens``) on the
  run's ``backbone`` (architecture + ``backbone.checkpoint``, ``backbone.checkpoint_key``), refused
  when the weights' fingerprint is not the saved one;
- the pooling of ``model.heads`` (a ``SingleProbe`` of ``probe=<name>``) with the saved weights; it
  must have ``attention_maps(tokens)`` (EP: one map per query; AbMILP, DOLG: one map).

``overrides`` (``key=value``) change keys of the saved config first, e.g. ``backbone.checkpoint=`` when
the backbone file has moved or ``data.root=`` for the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from torch import nn

from selfsup.config import CONFIG_DIR, ConfigError, instantiate
from selfsup.probing.features import FeatureSpec, FrozenFeatures
from selfsup.probing.heads import build_pool
from selfsup.probing.module import weights_fingerprint
from selfsup.training.checkpoint import CheckpointError

SINGLE_PROBE = "selfsup.probing.heads.SingleProbe"
POOL_PREFIX = "heads.probe.0."


@dataclass
class QueryProbe:
    """A probe's pooling with attention maps and the features it reads."""

    features: FrozenFeatures
    pool: nn.Module
    config: DictConfig  # the probe run's config, overrides applied
    epoch: int  # the checkpoint's epoch

    def spec(self, image_size: tuple[int, int]) -> FeatureSpec:
        return self.features.spec(image_size)


def is_probe_checkpoint(checkpoint: dict[str, Any]) -> bool:
    """True for a checkpoint written by ``ProbeModule`` (it carries ``probe.backbone_fingerprint``)."""
    return isinstance(checkpoint.get("probe"), dict) and "backbone_fingerprint" in checkpoint["probe"]


def probes_with_maps() -> list[str]:
    """Names of ``configs/probe/<name>.yaml`` whose pooling has ``attention_maps``."""
    names = []
    for path in sorted((CONFIG_DIR / "probe").glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        if target and hasattr(get_object(target), "attention_maps"):
            names.append(path.stem)
    return names


def apply_overrides(config: DictConfig, overrides: list[str], source: Path) -> None:
    """``key=value`` onto the saved config; only keys it has (a misspelling fails, listing the top level)."""
    for word in overrides:
        key, value = word.split("=", 1)
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(config, parent) if parent else config
        if not isinstance(node, DictConfig) or leaf not in node:
            raise ConfigError(
                f"{key} is not a key of the config saved in {source} (a probe checkpoint: overrides change that "
                f"config, e.g. backbone.checkpoint=... or data.root=...; its top-level keys: {', '.join(config)})"
            )
        OmegaConf.update(config, key, yaml.safe_load(value), merge=False)


def _describe_heads(config: DictConfig, state: dict[str, torch.Tensor]) -> str:
    heads_target = OmegaConf.select(config, "model.heads._target_") or "?"
    names = sorted({k.split(".")[1] for k in state if k.startswith("heads.")})
    shown = ", ".join(names[:6]) + (f", ... ({len(names)} heads)" if len(names) > 6 else "")
    what = f"model.heads={heads_target} (heads: {shown})"
    if heads_target == SINGLE_PROBE:
        what += f", pooling {OmegaConf.select(config, 'model.heads.pool._target_')}"
    return what


def _backbone(config: DictConfig, source: Path) -> nn.Module:
    path = OmegaConf.select(config, "backbone.checkpoint")
    if path in (None, "", "none") or not Path(str(path)).expanduser().is_file():
        what = "is not set" if path in (None, "", "none") else f"is {path}, which does not exist"
        raise CheckpointError(
            f"{source} holds the probe heads, not the frozen backbone, and backbone.checkpoint {what}: pass "
            "backbone.checkpoint=<the backbone file the probe was trained on> (.ckpt, .safetensors or .pth.tar)"
        )
    return instantiate(config.backbone)


def _no_maps(source: Path, config: DictConfig, state: dict[str, torch.Tensor]) -> ConfigError:
    return ConfigError(
        f"{source} has no query-based probe to draw: it has {_describe_heads(config, state)}, without "
        f"attention_maps(tokens). Probes with attention maps: {', '.join(probes_with_maps())} "
        "(e.g. python tools/train.py experiment=probe_ep backbone.checkpoint=...)"
    )


def load_query_probe(path: str | Path, checkpoint: dict[str, Any], overrides: list[str] = ()) -> QueryProbe:
    """The pooling (with ``attention_maps``) and features of the probe checkpoint ``checkpoint`` read
    from ``path`` (see the module docstring); ``CheckpointError`` / ``ConfigError`` say what to fix."""
    source = Path(path)
    if not checkpoint.get("config"):
        raise CheckpointError(f"{source} has no saved run config (written by tools/train.py); the probe cannot be rebuilt")
    config = OmegaConf.create(checkpoint["config"])
    apply_overrides(config, list(overrides), source)
    state = checkpoint["state_dict"]
    pool_target = OmegaConf.select(config, "model.heads.pool._target_")
    if OmegaConf.select(config, "model.heads._target_") != SINGLE_PROBE or not pool_target:
        raise _no_maps(source, config, state)
    if not hasattr(get_object(pool_target), "attention_maps"):
        raise _no_maps(source, config, state)
    options = {k: v for k, v in OmegaConf.to_container(config.model.features).items() if k not in ("_target_", "backbone")}
    features = FrozenFeatures(_backbone(config, source), **options)
    found, saved = weights_fingerprint(features.backbone), checkpoint["probe"]["backbone_fingerprint"]
    if found != saved:
        raise CheckpointError(
            f"backbone.checkpoint={config.backbone.checkpoint} holds other weights than the backbone {source} was "
            f"trained on (fingerprint {found} vs {saved}): pass backbone.checkpoint=<the backbone file of the probe run>"
        )
    pool = build_pool(instantiate(config.model.heads.pool), features.spec(OmegaConf.select(config, "data.image_size")))
    pool.load_state_dict({k[len(POOL_PREFIX):]: v for k, v in state.items() if k.startswith(POOL_PREFIX)})
    return QueryProbe(features, pool.eval(), config, int(checkpoint.get("epoch", -1)))
