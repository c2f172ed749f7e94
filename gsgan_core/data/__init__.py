"""Training data: the EG3D dataset reader and validator, and the procedural heads dataset."""

from gsgan_core.data.dataset import DatasetInfo, ImageDataset, check_dataset, composite, real_images

__all__ = ["DatasetInfo", "ImageDataset", "check_dataset", "composite", "real_images"]
