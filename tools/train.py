#!/usr/bin/env python
"""Train what the config describes.

    python tools/train.py experiment=ijepa                 # I-JEPA on the embedded dataset, CPU minutes
    python tools/train.py experiment=ijepa trainer.max_epochs=2 data.batch_size=32
    python tools/train.py --help                           # Hydra's help: groups and options

Configs live in ``configs/`` (``configs/train.yaml`` is the root); the composed, resolved config of a
run is saved as ``<run_dir>/config.yaml`` and inside every checkpoint.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # usable from a plain checkout
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
# processes started for this run (DDP ranks, submitit jobs on SLURM nodes) import selfsup from here too
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from selfsup.config import ConfigError, preflight, register_resolvers  # noqa: E402

register_resolvers()
# configs/hydra/launcher/submitit_slurm.yaml is checked against the plugin's schema of the same name, on purpose
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from selfsup.run import run
    from selfsup.training.checkpoint import CheckpointError

    try:
        run(cfg)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(2)
    except CheckpointError as err:
        print(f"checkpoint error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not {"-m", "--multirun", "--help", "-h", "--cfg", "-c", "--info"} & set(args):
        try:
            preflight(args)
        except ConfigError as err:
            print(f"config error: {err}", file=sys.stderr)
            sys.exit(2)
    main()
