#!/usr/bin/env python
"""Pictures of a run, written as PNG files.

    python tools/visualize.py masks out=masks.png                  # both samplers over images + frequency heat maps
    python tools/visualize.py attention checkpoint=<ckpt> out=attention.png   # encoder last-block attention
    python tools/visualize.py attention checkpoint=<probe run ckpt> out=ep_attention.png  # the probe's query maps
    python tools/visualize.py pca checkpoint=<ckpt> out=pca.png    # first 3 PCs of patch features, vs random init

Options and config overrides: see ``selfsup/viz/commands.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

from selfsup.config import ConfigError  # noqa: E402
from selfsup.training.checkpoint import CheckpointError  # noqa: E402
from selfsup.viz.commands import KINDS, render  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    try:
        path, picture = render(sys.argv[1], sys.argv[2:])
    except (ConfigError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path} ({picture.shape[1]}x{picture.shape[0]} px, {sys.argv[1]})")
