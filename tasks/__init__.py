"""Downstream tasks built on ``selfsup`` backbones: ``segmentation`` (ADE20K protocol) and ``detection`` (COCO protocol)."""
