"""The embedded dataset: generated locally and deterministically, written to disk in real formats.

``ensure_imagefolder(root, ...)`` writes ``<root>/{train,val}/<shape>/<n>.png`` on first use (under a
file lock, into a temporary folder renamed into place, so concurrent runs never see half a dataset)
and returns the root. The same settings always give byte-identical files.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from selfsup.data.embedded.render import SHAPES, render_object_image

FORMAT_VERSION = 1


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_if_missing(root: Path, spec: dict, write) -> Path:
    """Run ``write(tmp_dir)`` once per ``spec``; ``root/spec.json`` marks a finished dataset."""
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


def ensure_imagefolder(
    root: str | os.PathLike,
    image_size: int = 96,
    train_per_class: int = 200,
    val_per_class: int = 50,
    num_classes: int = len(SHAPES),
    seed: int = 0,
) -> Path:
    """Generate (once) the classification export in ImageFolder layout and return its root."""
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"data.embedded.num_classes must be in [2, {len(SHAPES)}], got {num_classes}")
    root = Path(root)
    spec = {
        "format": "imagefolder",
        "version": FORMAT_VERSION,
        "image_size": image_size,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "num_classes": num_classes,
        "seed": seed,
    }

    def write(tmp: Path) -> None:
        for split_id, (split, per_class) in enumerate((("train", train_per_class), ("val", val_per_class))):
            for label in range(num_classes):
                folder = tmp / split / SHAPES[label]
                folder.mkdir(parents=True)
                rng = np.random.default_rng([seed, split_id, label])
                for n in range(per_class):
                    pixels = render_object_image(rng, image_size, label)
                    Image.fromarray(pixels).save(folder / f"{n:05d}.png", optimize=False)

    return _write_if_missing(root, spec, write)
