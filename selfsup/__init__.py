"""selfsup: config-driven self-supervised vision training (I-JEPA, DMT-JEPA, probing, dense tasks)."""

__version__ = "0.1.0"
