"""The training loop, top to bottom: `train(config)`.

    run = setup_run(config)              networks, optimisers, progress: fresh, --resume or --init-g
    logger = RunLogger(run)              options, log, progress bar, snapshots, metrics
    until kimg (or --max-steps, --max-minutes, Ctrl-C / SIGTERM):
        losses = train_step(run, batch)  G phase, D phase, G_ema
        logger.step(...)                 and a snapshot every --snap-kimg
    logger.snapshot(final=True)

One process or many (torchrun): every process takes batch / world_size images per step and only
rank 0 writes files (train/distributed.py). A stop request on any process stops all of them
together, after the step, with a final snapshot.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

import torch
from torch import nn

from gsgan_core.train.config import TrainConfig
from gsgan_core.train.data import real_batches
from gsgan_core.train.distributed import all_reduce_mean_
from gsgan_core.train.logger import RunLogger
from gsgan_core.train.run import Run, setup_run
from gsgan_core.train.step import LOSS_NAMES, train_step


@dataclass
class TrainResult:
    step: int
    nimg: int
    scalars: dict  # the last logged averages
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module


class StopRequests:
    """Ctrl-C and SIGTERM (while inside `with`) and --max-minutes ask the run to stop after its step."""

    def __init__(self, max_minutes: float):
        self.requested = False
        self.deadline = time.time() + max_minutes * 60 if max_minutes else None
        self.previous: dict = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self.previous = {s: signal.signal(s, self._request) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _request(self, signum, frame) -> None:
        self.requested = True

    def local(self) -> bool:
        """This process's request: a signal, or its time limit."""
        return self.requested or (self.deadline is not None and time.time() >= self.deadline)


def reduce_scalars(losses: dict, stop: bool, run: Run) -> tuple[dict[str, float], bool]:
    """Losses averaged over processes, and whether any process asked to stop: one all-reduce."""
    values = torch.stack([losses[name].detach().float() for name in LOSS_NAMES]
                         + [torch.tensor(float(stop), device=run.device)])
    values = all_reduce_mean_(values, run.world).tolist()
    return dict(zip(LOSS_NAMES, values)), values[-1] > 0


def train(config: TrainConfig) -> TrainResult:
    """Trains until config.kimg (or max_steps, max_minutes, or a stop signal); every process returns its networks."""
    run = setup_run(config)
    config = run.config  # a resumed run's settings
    logger = RunLogger(run)
    batches = real_batches(run.dataset, config.batch, run.world, config.seed, run.progress.step, config.workers)
    steps = 0
    try:
        with StopRequests(config.max_minutes) as stop:
            while run.progress.nimg < logger.total_nimg and not (config.max_steps and steps >= config.max_steps):
                losses = train_step(run, next(batches))
                steps += 1
                scalars, stopping = reduce_scalars(losses, stop.local(), run)
                logger.step(scalars, {k: losses[k] for k in ("blur_sigma", "ema_beta")})
                if logger.snapshot_due():
                    logger.snapshot()
                if stopping:
                    logger.note(f"stop requested (signal or --max-minutes): writing a final snapshot at step "
                                f"{run.progress.step}")
                    break
            logger.snapshot(final=True)  # the end: kimg, max_steps, max_minutes, or a stop request
    finally:
        logger.close()
    return TrainResult(run.progress.step, run.progress.nimg, logger.last, run.G, run.D, run.G_ema)
