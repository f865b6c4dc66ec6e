"""The texture variant of the embedded classification export (``data.embedded.kind=textures``)."""

from __future__ import annotations

import numpy as np
import pytest

from selfsup.data.embedded import ensure_imagefolder
from selfsup.data.embedded.materials import MATERIALS
from selfsup.data.embedded.textures import render_texture_image


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_textures_export_names_classes_by_material_and_is_deterministic(tmp_path):
    settings = dict(image_size=32, train_per_class=2, val_per_class=1, kind="textures")
    a = _files(ensure_imagefolder(tmp_path / "a", **settings))
    b = _files(ensure_imagefolder(tmp_path / "b", **settings))
    assert a == b and len(a) == 10 * 3
    assert sorted({p.parts[1] for p in a}) == sorted(MATERIALS)
    assert {p.parts[0] for p in a} == {"train", "val"}
    objects = _files(ensure_imagefolder(tmp_path / "c", **{**settings, "kind": "objects"}))
    assert set(objects) != set(a)  # objects are named by shape


def test_every_material_renders_a_visible_image_in_per_image_colours():
    for label, name in enumerate(MATERIALS):
        one, two = (render_texture_image(np.random.default_rng([seed, label]), 64, label).astype(float) for seed in (0, 1))
        assert one.shape == (64, 64, 3) and one.std() > 20, name  # not flat
        assert np.abs(one - two).mean() > 20, name  # colours, rotation and phase differ per image


def test_unknown_kind_is_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"data.embedded.kind must be one of \['objects', 'textures'\], got 'grass'"):
        ensure_imagefolder(tmp_path / "x", kind="grass")
