#!/usr/bin/env python
"""Evaluate a trained detection checkpoint (COCO box and mask AP) without training.

    python tools/evaluate.py outputs/det_vitdet/<run>/checkpoints/last.ckpt
    python tools/evaluate.py <ckpt> data.root=/datasets/coco model.eval_backend=pycocotools

The model and data come from the config saved in the checkpoint; ``key=value`` overrides change it.
Results (COCO json, metrics.json, drawings) go to ``<run_dir>/eval/<checkpoint name>/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # usable from a plain checkout
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from selfsup.config import ConfigError
    from selfsup.training.checkpoint import CheckpointError
    from tasks.detection.evaluate_run import evaluate_checkpoint

    try:
        evaluate_checkpoint(argv[0], argv[1:])
    except (ConfigError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
