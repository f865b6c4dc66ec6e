"""Downstream tasks built on the selfsup backbones (detection, segmentation)."""
