"""What ``tools/train.py`` does with a composed config: build, fit, summarise.

Every object comes from the config (``selfsup.config.instantiate``); this file only wires them and
prints the final summary line that says where everything went.
"""

from __future__ import annotations

import logging
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from selfsup.callbacks.checkpoint import backbone_paths
from selfsup.callbacks.preemption import Preempted
from selfsup.callbacks.run_config import RunConfig
from selfsup.config import ConfigError, instantiate
from selfsup.training.checkpoint import CheckpointError, read_checkpoint
from selfsup.training.pretrain import NonFiniteLossError
from selfsup.training.slurm import check_task_layout, slurm_job_id, slurm_restart_count

log = logging.getLogger("selfsup")

# Lightning warnings that do not apply here: the target encoder is in eval mode on purpose, and the
# data module resumes mid-epoch itself (its position is in the checkpoint), which Lightning cannot see.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# Step checkpoints hold the state after the optimiser step, which is the state a resume needs.
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps")


def find_resume_checkpoint(run_dir: Path) -> Path | None:
    """Newest readable checkpoint under ``run_dir`` (SLURM ``hpc_ckpt_*`` and ``checkpoints/*``).

    An unreadable (truncated, corrupt) file is reported and skipped, so the previous good one is used.
    """
    candidates = [p for p in run_dir.glob("hpc_ckpt_*.ckpt")] + list((run_dir / "checkpoints").glob("*.ckpt"))
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            read_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping unusable checkpoint: %s", err)
            continue
        return path
    return None


def resolve_resume(resume: str | None, run_dir: Path) -> str | None:
    """``resume`` -> a checkpoint path or None. ``null`` starts fresh, except in a SLURM job that was
    requeued (``SLURM_RESTART_COUNT`` > 0), which continues as with ``auto``."""
    if resume in (None, "", "none"):
        restarts = slurm_restart_count()
        if not restarts:
            return None
        log.info("SLURM job %s restarted (%d): continuing its run directory as with resume=auto", slurm_job_id(), restarts)
        resume = "auto"
    if resume == "auto":
        found = find_resume_checkpoint(run_dir)
        if found is None:
            log.info("resume=auto: no checkpoint in %s yet, starting from scratch", run_dir)
            return None
        log.info("resume=auto: resuming from %s", found)
        return str(found)
    path = Path(resume).expanduser()
    read_checkpoint(path)  # fail early, with the file name, if it is not usable
    return str(path)


def _fmt(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_line(trainer: L.Trainer, run_dir: Path, seconds: float) -> str:
    metrics = {k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(metrics.items()))
    parts = [f"done in {seconds / 60:.1f} min: {trainer.current_epoch} epochs, {trainer.global_step} steps"]
    if shown:
        parts.append(shown)
    ckpt_cb = trainer.checkpoint_callback
    last = getattr(ckpt_cb, "last_model_path", "") or getattr(ckpt_cb, "best_model_path", "")
    if last:
        parts.append(f"checkpoint: {last}")
        target = backbone_paths(last)["target_encoder"]
        if target.exists():
            parts.append(f"backbone: {target}")
    for logger in trainer.loggers:
        label = type(logger).__name__.lower().replace("resumable", "").replace("logger", "")
        parts.append(f"{label} logs: {logger.log_dir or logger.save_dir}")
    parts.append(f"config: {run_dir / 'config.yaml'}")
    return " | ".join(parts)


def run(cfg: DictConfig) -> dict[str, float]:
    """Build data, model, callbacks, loggers and trainer from ``cfg``; fit; print the summary."""
    for name in ("lightning.pytorch", "lightning.fabric"):  # Lightning prints these itself; not twice
        logging.getLogger(name).propagate = False
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    run_dir = Path(cfg.paths.run_dir)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required values are not set: {', '.join(missing)} (pass e.g. {missing[0]}=...)")
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:
        raise ConfigError(f"the config does not resolve: {err}") from err

    try:
        check_task_layout(cfg.trainer.num_nodes, cfg.trainer.devices)
    except ValueError as err:
        raise ConfigError(str(err)) from None

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    callbacks.append(RunConfig(resolved, run_dir))
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    ckpt_path = resolve_resume(cfg.resume, run_dir)

    start = time.time()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except NonFiniteLossError as err:
        last = getattr(trainer.checkpoint_callback, "last_model_path", "")
        raise NonFiniteLossError(f"{err} Last good checkpoint: {last or 'none saved yet'}") from None
    except Preempted:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # state saved (and job requeued): leave quietly
        raise
    line = summary_line(trainer, run_dir, time.time() - start)
    if trainer.is_global_zero:
        print(line, flush=True)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, (int, float, torch.Tensor))}
