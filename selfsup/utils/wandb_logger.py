"""A Lightning ``WandbLogger`` that works without a network and keeps one run per run directory.

- ``offline: null`` picks offline mode automatically when no API key is configured (``WANDB_API_KEY``
  or a ``api.wandb.ai`` entry in ``~/.netrc``) or ``WANDB_MODE=offline`` is set, and says how to sync.
- The run id is written to ``<save_dir>/wandb_run_id`` the first time and read back afterwards, so a
  resumed or requeued run appends to the same wandb run instead of starting a new one.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger("selfsup")
RUN_ID_FILE = "wandb_run_id"


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def persistent_run_id(save_dir: Path) -> str:
    """The run id stored in ``save_dir``, created on first use (atomically, first writer wins)."""
    path = save_dir / RUN_ID_FILE
    if path.exists():
        return path.read_text().strip()
    save_dir.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_hex(4)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(candidate)
    return candidate


def wandb_logger(
    project: str,
    name: str | None,
    save_dir: str,
    offline: bool | None,
    tags: list[str] | None,
    group: str | None,
    log_model: bool,
) -> WandbLogger:
    """Config keys (``configs/logger/wandb.yaml``): ``project``, ``name``, ``save_dir``, ``offline``
    (null = automatic), ``tags``, ``group``, ``log_model``."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not has_wandb_credentials()
        if offline:
            log.warning(
                "wandb: no API key found, logging offline to %s/wandb; upload later with "
                "`wandb sync %s/wandb/offline-run-*` (or set WANDB_API_KEY / run `wandb login`)",
                save_dir, save_dir,
            )
    run_dir = Path(save_dir)
    return WandbLogger(
        project=project,
        name=name,
        save_dir=str(run_dir),
        offline=offline,
        id=persistent_run_id(run_dir),
        resume="allow",
        tags=list(tags or []),
        group=group,
        log_model=log_model,
    )
