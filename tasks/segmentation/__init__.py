"""Semantic segmentation on ADE20K-format data (the BEiT / MAE / iBOT protocol), in plain torch.

- ``dataset.py``, ``transforms.py``, ``datamodule.py``: ADE20K layout, reduce-zero-label, the mmseg
  training augmentation (random resize, cat-max crop, flip, photometric distortion) in
  ``torchvision.transforms.v2``; deterministic and resumable like every data module here.
- ``encoder.py`` (multi-level ViT features, frozen / partially frozen / fine-tuned), ``neck.py``
  (deconv x4, deconv x2, identity, max-pool), ``conv_module.py``, ``uper_head.py`` (UPerHead +
  pyramid pooling), ``fcn_head.py`` (auxiliary FCN head and the linear head), ``segmentor.py``.
- ``inference.py`` (whole-image and sliding-window), ``metrics.py`` (dataset-level mIoU / mAcc /
  aAcc from one confusion matrix), ``module.py`` (the LightningModule), ``overlays.py``.
"""
