"""Training: `TrainConfig` (every setting), `train(config)` (the loop) and its parts.

    config.py        TrainConfig and the gsgan-train flags
    architecture.py  the model flags -> the networks' configs (fresh runs; checks on --resume, --init-g)
    run.py           setup_run(config) -> Run: networks, optimisers, progress (fresh, resume, init)
    step.py          train_step(run, batch) -> losses
    logger.py        RunLogger: options, JSONL log, progress bar, snapshots, metrics
    loop.py          train(config): the loop that joins them
    data.py, distributed.py, losses.py, state.py    data order, processes, loss terms, the state file

Entry points: `gsgan-train ...` on one process, `torchrun --nproc_per_node N -m gsgan_core.train ...` on many.
"""

from gsgan_core.train.config import TrainConfig, parse_args
from gsgan_core.train.loop import train

__all__ = ["TrainConfig", "parse_args", "train"]
