"""Image-quality metrics: SWD on Laplacian pyramids (no weights needed) and FID (local weights file)."""

from gsgan_core.metrics.swd import sliced_wasserstein

__all__ = ["sliced_wasserstein"]
