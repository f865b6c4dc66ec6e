"""Object detection and instance segmentation: ViTDet-style Mask R-CNN on our ViT, COCO data and metrics."""
