"""Probing frozen backbones: features, head sets, the probe LightningModule, kNN, low-shot subsets,
feature caching. The probe heads themselves are in ``selfsup.probes``."""
