"""Write a generated dataset once, atomically, under a lock, into a folder of its own settings."""

from __future__ import annotations

import fcntl
import hashlib
import inspect
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


def embedded_root(writer: Callable[..., Path], root: str | os.PathLike, settings: dict) -> Path:
    """The folder ``writer(folder, **settings)`` generates into: ``root`` itself for the writer's default
    settings, ``root-<8 hex of the changed settings>`` for any others. A pure function of its
    arguments (every DDP rank agrees without looking at the disk), so runs with different settings
    never share, overwrite or delete each other's files."""
    defaults = {
        name: p.default for name, p in inspect.signature(writer).parameters.items() if p.default is not inspect.Parameter.empty
    }
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ValueError(f"unknown data.embedded key(s) {unknown}; valid: {', '.join(defaults)}")
    changed = {key: value for key, value in settings.items() if defaults[key] != value}
    root = Path(root)
    if not changed:
        return root
    digest = hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    return root.with_name(f"{root.name}-{digest}")
