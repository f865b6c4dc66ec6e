"""The probe head: ``Sequential(pool, BatchNorm1d(width, affine=False, eps=1e-6), Linear(width, C))``.

The layout of ``probe_heads.build_probe_head`` in the efficient-probing code, so a head's state dict
(``0.*`` pooling, ``1.running_*``, ``2.weight/bias``) is the official one. ``norm: none`` drops the
BatchNorm (``Sequential(pool, Identity, Linear)``), as the V-JEPA ``AttentiveClassifier``.
``classifier_init``: ``default`` (PyTorch's Linear init, the official probes) or ``normal``
(weight N(0, 0.01), bias 0: DINOv2's linear heads).
"""

from __future__ import annotations

from torch import nn

NORMS = ("batchnorm", "none")
CLASSIFIER_INITS = ("default", "normal")


def make_classifier(width: int, num_classes: int, init: str) -> nn.Linear:
    if init not in CLASSIFIER_INITS:
        raise ValueError(f"classifier_init={init!r}; valid: {', '.join(CLASSIFIER_INITS)}")
    linear = nn.Linear(width, num_classes)
    if init == "normal":
        nn.init.normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
    return linear


class ProbeHead(nn.Sequential):
    """A pooling module (``out_dim`` wide), a non-affine BatchNorm or nothing, and a linear classifier.
    Built pool first, then the classifier (the official construction order)."""

    def __init__(self, pool: nn.Module, num_classes: int, norm: str = "batchnorm", classifier_init: str = "default") -> None:
        if norm not in NORMS:
            raise ValueError(f"head norm={norm!r}; valid: {', '.join(NORMS)}")
        width = pool.out_dim
        bn = nn.BatchNorm1d(width, affine=False, eps=1e-6) if norm == "batchnorm" else nn.Identity()
        super().__init__(pool, bn, make_classifier(width, num_classes, classifier_init))

    @property
    def pool(self) -> nn.Module:
        return self[0]
