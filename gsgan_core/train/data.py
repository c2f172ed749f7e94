"""What training reads: the dataset (checked in full first), its batches in an order that is a function
of (seed, step) alone, and the random numbers of each step, from (seed, rank, step).

So progress alone restores both on resume: nothing random is saved.
"""

from __future__ import annotations

import hashlib

import signal

import numpy as np
import torch
from torch import Tensor

from gsgan_core.data.dataset import ImageDataset, check_dataset
from gsgan_core.errors import DatasetError
from gsgan_core.train.distributed import Dist, agree_on_failure

BACKGROUND_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def open_dataset(path: str, xflip: bool, world: Dist) -> ImageDataset:
    """The dataset, every image of it checked on rank 0 before anything else happens (DatasetError)."""
    problem = None
    if world.is_main:
        try:
            info = check_dataset(path, progress=True)
            print(f"dataset {path}: {info.num_images} images, {info.resolution}x{info.resolution}, "
                  f"{'RGBA' if info.channels == 4 else 'RGB'}", flush=True)
        except DatasetError as err:
            problem = err
    agree_on_failure(problem, world, path)
    return ImageDataset(path, xflip=xflip)


def dataset_identity(dataset: ImageDataset) -> dict:
    """What a resumed run checks its data against: a dataset moved elsewhere is still the same one, and
    another one of the same size is told apart by its camera labels."""
    labels = dataset.labels[: dataset.num_files].detach().to("cpu", torch.float32).contiguous().numpy()
    return {"name": dataset.name, "images": dataset.num_files, "resolution": dataset.resolution,
            "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest()[:16]}


class StepBatches(torch.utils.data.Sampler):
    """Index lists for one process, step after step, forever; a function of (seed, step) only.

    The global batch of step s is positions [s*B, (s+1)*B) of an endless sequence of shuffled epochs
    (epoch e shuffled with seed + e); process r takes its slice. So resuming at step s only needs s.
    """

    def __init__(self, num_items: int, batch: int, world: Dist, seed: int, start_step: int):
        self.num_items, self.batch, self.world = num_items, batch, world
        self.seed, self.start_step = seed, start_step
        self.per_process = batch // world.world_size

    def _epoch(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}  # keep at most a few
            self._cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return self._cache[epoch]

    def __iter__(self):
        self._cache: dict[int, np.ndarray] = {}
        step = self.start_step
        while True:
            start = step * self.batch + self.world.rank * self.per_process
            positions = range(start, start + self.per_process)
            yield [int(self._epoch(p // self.num_items)[p % self.num_items]) for p in positions]
            step += 1


def _ignore_interrupts(worker_id: int) -> None:
    """Data workers leave Ctrl-C and SIGTERM (sent to the whole process group by terminals and job
    schedulers) to the main process, which finishes the step, saves, then shuts the workers down.
    A worker still exits if the main process dies: PyTorch's workers watch their parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def real_batches(dataset: ImageDataset, batch: int, world: Dist, seed: int, start_step: int, workers: int):
    """An endless iterator of (images uint8 [b, 4, R, R], labels [b, 25]) from step `start_step` on."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(len(dataset), batch, world, seed, start_step),
        num_workers=workers, pin_memory=world.device.type == "cuda", persistent_workers=workers > 0,
        worker_init_fn=_ignore_interrupts,
    )
    return iter(loader)


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The random numbers of one step on one process, from (seed, rank, step): exact resume, no state."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))


def background_colors(kind: str, n: int, rng: torch.Generator) -> Tensor:  # -> [n, 3] in [0, 1]
    if kind == "random":
        return torch.rand(n, 3, generator=rng)
    return torch.tensor(BACKGROUND_COLORS[kind]).expand(n, 3)
