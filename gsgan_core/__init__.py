"""gsgan: hierarchical 3D Gaussian-splat GANs."""

__version__ = "0.1.0"
