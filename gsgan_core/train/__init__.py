"""Training: `TrainConfig` (every hyperparameter), `train(config)` (the loop), the loss terms.

Entry points: `gsgan-train ...` on one process, `torchrun --nproc_per_node N -m gsgan_core.train ...` on many.
"""

from gsgan_core.train.config import TrainConfig, parse_args
from gsgan_core.train.loop import train

__all__ = ["TrainConfig", "parse_args", "train"]
