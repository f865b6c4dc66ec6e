"""Keeps the resolved run configuration with the run: in ``config.yaml`` and inside every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import yaml


class RunConfig(L.Callback):
    """Writes ``<run_dir>/config.yaml`` at fit start and stores the config under ``checkpoint["config"]``,
    so a checkpoint alone is enough to rebuild its model (export, probing, resume checks).

    Added by ``tools/train.py`` itself (it *is* the config), not listed in the callbacks YAML.
    """

    def __init__(self, config: dict[str, Any], run_dir: str | Path) -> None:
        self.config = config
        self.run_dir = Path(run_dir)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["config"] = self.config
