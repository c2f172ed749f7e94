"""Helpers the benchmarks share: the device's name, GPU timing, CPU frame timing, a log tee.

Scripts here are run as `python benchmarks/X.py`, so this folder is on sys.path and they import it as
`from common import ...`. torch and numpy are imported inside the functions: some benchmarks must do
work (fork workers, install stand-in modules) before either is imported.
"""

from __future__ import annotations

import statistics
import time


def device_name(device) -> str:
    """The GPU's name for a CUDA device, "CPU" for any other."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def sync(device) -> None:
    """Wait for the device's queued work (a no-op off CUDA), so that a wall clock reading covers it."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device, iters: int, warmup: int = 5) -> float:
    """Median wall time of `fn()` in ms over `iters` calls after `warmup` calls, each synchronised."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def set_tf32(enabled: bool) -> None:
    """TF32 for matmuls and cuDNN convolutions, on or off."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def timed(fn) -> tuple[float, float, object]:
    """One call of fn: (wall ms, process CPU ms over all threads, its result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3, result


def summary(walls: list[float], cpus: list[float]) -> dict:
    """Frame count, median / 90th percentile / min wall ms and median CPU ms of timed frames."""
    import numpy as np

    return {
        "frames": len(walls),
        "median_ms": statistics.median(walls),
        "p90_ms": float(np.percentile(walls, 90)),
        "min_ms": min(walls),
        "cpu_median_ms": statistics.median(cpus),
    }


class Tee:
    """A text stream that writes to the terminal and to a log file: `sys.stdout = Tee(sys.__stdout__, log)`."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def isatty(self):
        return False

    def fileno(self):
        return self.stream.fileno()
