"""Evaluate a trained detection checkpoint on its validation set, without training.

The model and data are rebuilt from the resolved config stored in the checkpoint (so the evaluation
uses exactly the trained architecture and the same test transform); ``key=value`` overrides change
that config first (e.g. ``data.root=/datasets/coco``, ``model.eval_backend=pycocotools``,
``data.val_batch_size=2``). The detector's weights come from the checkpoint, loaded strictly; the
backbone's own ``checkpoint`` entry is ignored (its weights are part of the detector's).
Predictions, ``metrics.json`` and drawings go to ``model.output_dir`` (default
``<run_dir>/eval/<checkpoint name>/``). A relative checkpoint path that does not exist in the
current directory is looked up under ``$PROJECT_ROOT`` (the repository root; ``outputs/`` is there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from selfsup.config import ConfigError, instantiate
from selfsup.run import run as _  # noqa: F401  (Lightning warning filters)
from selfsup.training.checkpoint import load_strict, read_checkpoint


BACKBONE_TARGET = "selfsup.models.backbone.jepa_vit"


def drop_backbone_checkpoints(node: Any) -> None:
    """Set ``checkpoint: null`` on every backbone node: the detector checkpoint holds those weights."""
    if isinstance(node, DictConfig):
        if node.get("_target_") == BACKBONE_TARGET and node.get("checkpoint") is not None:
            node.checkpoint = None
        for value in node.values():
            drop_backbone_checkpoints(value)
    elif isinstance(node, list) or OmegaConf.is_list(node):
        for value in node:
            drop_backbone_checkpoints(value)


def evaluation_config(checkpoint: dict[str, Any], checkpoint_path: Path, overrides: list[str]) -> DictConfig:
    """The training run's resolved config with ``overrides`` applied and outputs redirected."""
    if "config" not in checkpoint:
        raise ConfigError(f"{checkpoint_path} holds no config (it was not written by tools/train.py)")
    cfg = OmegaConf.create(checkpoint["config"])
    if cfg.model.get("_target_") != "tasks.detection.module.DetectionModule":
        raise ConfigError(f"{checkpoint_path} is not a detection checkpoint (model: {cfg.model.get('_target_')})")
    default_out = checkpoint_path.resolve().parent.parent / "eval" / checkpoint_path.stem
    cfg.model.output_dir = str(default_out)
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value")
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ConfigError(f"unknown config key '{key}' in the checkpoint's config")
    cfg.merge_with(OmegaConf.from_dotlist(overrides))
    drop_backbone_checkpoints(cfg.model)
    return cfg


def locate(checkpoint_path: str | Path) -> Path:
    """``checkpoint_path`` as given, or, if relative and absent here, under ``$PROJECT_ROOT`` (where
    ``tools/train.py`` writes ``outputs/``), so a path printed by a run works from any directory."""
    path = Path(checkpoint_path).expanduser()
    if path.is_absolute() or path.exists() or "PROJECT_ROOT" not in os.environ:
        return path
    under_root = Path(os.environ["PROJECT_ROOT"]) / path
    return under_root if under_root.exists() else path


def evaluate_checkpoint(checkpoint_path: str | Path, overrides: list[str]) -> dict[str, float]:
    """Rebuild data and model from the checkpoint's config, load the weights strictly, validate once."""
    path = locate(checkpoint_path)
    checkpoint = read_checkpoint(path)
    cfg = evaluation_config(checkpoint, path, overrides)
    L.seed_everything(int(cfg.seed))
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    load_strict(model, checkpoint["state_dict"], f"checkpoint {path}")
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                        logger=False, enable_checkpointing=False, enable_progress_bar=True)
    metrics = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    out = Path(cfg.model.output_dir)
    shown = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
    print(f"evaluated {path} (step {checkpoint.get('global_step')}) | {shown} | results: "
          f"{out / 'coco_instances_results.json'} | metrics: {out / 'metrics.json'} | drawings: {out / 'vis'}", flush=True)
    return {k: float(v) for k, v in metrics.items()}

