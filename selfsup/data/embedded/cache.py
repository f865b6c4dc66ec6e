"""Write a generated dataset once, atomically, under a lock."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_once(root: Path, spec: dict, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_dir)`` once per ``spec`` and move the result to ``root``.

    ``root/spec.json`` marks a finished dataset; a different spec regenerates it. A file lock makes
    concurrent runs (parallel tests, DDP ranks) wait for one writer instead of racing.
    """
    marker = root / "spec.json"
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return root
    with _locked(root.parent / f".{root.name}.lock"):
        if marker.exists() and json.loads(marker.read_text()) == spec:
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        write(tmp)
        (tmp / "spec.json").write_text(json.dumps(spec, indent=1))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    return root
