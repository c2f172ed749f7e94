"""`GraphedSynthesis`: the generator's synthesis replayed as one CUDA graph.

At batch 1 the synthesis network is a few hundred small kernels; launching them from Python costs
more than running them. Capturing them once in a CUDA graph and replaying it removes that cost
(see docs/BENCHMARKS.md). The weights are read at replay time, so a graph stays valid while the
generator's parameters are updated in place; a new batch size or device needs a new graph.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from torch import Tensor

from gsgan_core.gaussians import Gaussians
from gsgan_core.models.generator import FRONTAL_VIEW_DIR, Generator


class GraphedSynthesis:
    """Callable like `generator.synthesize(ws, view_dirs)` for a fixed batch size on a CUDA device."""

    def __init__(self, generator: Generator, batch_size: int = 1, warmup: int = 3):
        device = next(generator.parameters()).device
        if device.type != "cuda":
            raise ValueError("GraphedSynthesis needs the generator on a CUDA device")
        config = generator.config
        self.generator = generator
        self.batch_size = batch_size
        self.ws = torch.zeros(batch_size, config.num_ws, config.w_dim, device=device)
        self.view_dirs = torch.tensor(FRONTAL_VIEW_DIR, device=device).repeat(batch_size, 1)
        with torch.no_grad():
            # Warm-up on a side stream (as torch.cuda.graphs asks) also builds the generator's
            # cached hierarchy indices, which must not be allocated inside the capture.
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    generator.synthesize(self.ws, self.view_dirs)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            # "thread_local": other threads (a viewer's render worker, an inversion) may use the GPU
            # meanwhile; only this thread's calls must be capture-safe.
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.output: Gaussians = generator.synthesize(self.ws, self.view_dirs)

    def __call__(
        self,
        ws: Tensor,  # [batch_size, num_ws, w_dim]
        view_dirs: Tensor | None = None,  # [batch_size, 3]; default frontal
        clone: bool = True,  # False: return the graph's own buffers, overwritten by the next call
    ) -> Gaussians:
        if ws.shape != self.ws.shape:
            raise ValueError(f"this graph was captured for ws {tuple(self.ws.shape)}, got {tuple(ws.shape)}")
        self.ws.copy_(ws)
        if view_dirs is None:
            self.view_dirs.copy_(torch.tensor(FRONTAL_VIEW_DIR).expand_as(self.view_dirs))
        else:
            self.view_dirs.copy_(view_dirs)
        self.graph.replay()
        if not clone:
            return self.output
        return replace(
            self.output,
            **{f.name: getattr(self.output, f.name).clone() for f in fields(self.output) if f.name not in ("level", "parent")},
        )
