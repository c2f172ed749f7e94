"""The headless engine: model, caches and camera in, a frame (a numpy image) out. No UI here.

Three caches, each keyed by the state parts its result depends on (the parts are frozen and
hashable, so they are the keys themselves):

    raw Gaussians     (model, latent)                                -> generator
    shown Gaussians   (raw key, levels, whether the mode colours levels) -> cheap edits (edits.py)
    frame             (shown key, camera, render settings, backend)  -> rasterizer

A camera move only misses the frame cache, so it never reruns the generator. The engine must not
import dearpygui: the GPU benchmark and `gsgan-render` use it on machines without it.
Every public method takes the engine's lock, so a recording thread and the UI can share it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np
import torch
from torch import Tensor

from gsgan_core.cameras import OrbitPose, to_rasterizer
from gsgan_core.errors import ConfigError
from gsgan_core.gaussians import Gaussians
from gsgan_core.io.checkpoint import CheckpointInfo
from gsgan_core.io.open import load_generator
from gsgan_core.metrics.levels import level_contributions
from gsgan_core.models.generator import Generator
from gsgan_core.render import backend_report, render

from .edits import depth_colours, display_edits, shown_mask
from .latent import conditioning_label, edited_ws, mixable_parts, principal_directions
from .state import RENDER_MODES, CameraState, ExplorerState, LatentState, check_resolution
from .viewer_camera import camera_from_orbit_pose, viewer_cameras

PICK_MIN_ALPHA = 0.2  # clicking where the image is this transparent clears the selection


@dataclass
class Frame:
    image: np.ndarray  # [H, W, 3] uint8, on the host
    num_gaussians: int  # how many Gaussians were drawn
    key: Hashable  # the frame-cache key; equal keys mean equal images


@dataclass
class EngineStats:
    """Timings of the last computation of each stage (milliseconds) and how often each ran."""

    generator_ms: float = 0.0
    render_ms: float = 0.0  # rasterizer + colour mapping + copy to the host
    generator_calls: int = 0
    render_calls: int = 0
    num_gaussians: int = 0


@dataclass
class _RenderedFrame:
    frame: Frame
    depth: Tensor  # [H, W] expected depth, on the device (for picking)
    alpha: Tensor  # [H, W]
    cam2world: Tensor  # [4, 4], on the host
    K_norm: Tensor  # [3, 3], on the host
    shown_index: Tensor  # [M] indices into the raw Gaussians of the Gaussians drawn


class _LRU:
    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value

    def clear(self) -> None:
        self.items.clear()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Engine:
    """Turns an `ExplorerState` into frames, recomputing only what changed.

    `device`: where the generator and rasterizer run. `precision` (CUDA only; the rasterizer
    always gets float32): "fp32", "tf32" (TF32 matmuls, a process-wide torch switch) or "bf16"
    (autocast of the synthesis). `cuda_graph`: replay the synthesis as one CUDA graph
    (`GraphedSynthesis`; at batch 1 kernel launches cost more than the kernels); falls back to
    eager if capture fails.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        backend: str = "auto",
        precision: str = "fp32",
        num_directions: int = 5,
        direction_samples: int = 2000,
        cuda_graph: bool = False,
    ):
        if precision not in ("fp32", "tf32", "bf16"):
            raise ConfigError(f"precision must be 'fp32', 'tf32' or 'bf16', got {precision!r}")
        self.device = torch.device(device)
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda" and precision != "bf16"
        self.graph_problem: str | None = None  # why the CUDA graph is not used, if asked for
        self._graphed = None
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            torch.backends.cudnn.allow_tf32 = precision == "tf32"
        self.backend = backend
        self.precision = precision
        self.num_directions = num_directions
        self.direction_samples = direction_samples
        self.generator: Generator | None = None
        self.info: CheckpointInfo | None = None
        self.stats = EngineStats()
        self.directions: Tensor | None = None  # [k, w_dim] unit principal directions of W
        self.direction_stds: Tensor | None = None  # [k] standard deviation of w along each
        self._generation = 0  # bumps on every load so cache keys of another model never match
        self._c: Tensor | None = None  # [1, c_dim] conditioning label for pose-conditioned mappings
        self._raw = _LRU(8)
        self._shown = _LRU(8)
        self._frames = _LRU(4)
        self._shares = _LRU(4)
        self._last_frame: _RenderedFrame | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ model
    @property
    def loaded(self) -> bool:
        return self.generator is not None

    def load(self, path: str | Path) -> CheckpointInfo:
        """Loads a checkpoint or an official snapshot. On any error (CheckpointError, ...) the previous
        model stays loaded."""
        generator, info = load_generator(path, self.device)
        self.set_generator(generator, info)
        return info

    def set_generator(self, generator: Generator, info: CheckpointInfo | None = None) -> None:
        """Uses an in-memory generator (tests, benchmarks); `info` defaults to the config's facts."""
        generator = generator.to(self.device).eval().requires_grad_(False)
        info = info or CheckpointInfo(path="<in memory>", config=generator.config)
        directions, stds = principal_directions(generator, info.camera, self.device, self.num_directions,
                                                self.direction_samples)
        graphed = None
        if self.cuda_graph:
            from gsgan_core.models.graphed import GraphedSynthesis

            try:
                graphed = GraphedSynthesis(generator, batch_size=1)
                self.graph_problem = None
            except Exception as err:  # capture can fail on odd set-ups; eager gives the same result
                self.graph_problem = f"{type(err).__name__}: {err}"
        with self._lock:
            self._graphed = graphed
            self.generator, self.info = generator, info
            self.directions, self.direction_stds = directions, stds
            self._c = conditioning_label(generator, info.camera, self.device)  # [1, 25] or None
            self._generation += 1
            for cache in (self._raw, self._shown, self._frames, self._shares):
                cache.clear()
            self._last_frame = None

    def default_camera(self) -> CameraState:
        """The checkpoint's default view (the FFHQ view when nothing is loaded)."""
        pose = self.info.camera if self.info is not None else OrbitPose()
        return camera_from_orbit_pose(pose)

    def num_levels(self) -> int:
        return self.generator.config.num_levels if self.generator is not None else 0

    def mixable_parts(self) -> list[str]:
        """Names of the entries of LatentState.take_b: one per level, then the background."""
        return mixable_parts(self.generator)

    def describe(self) -> dict[str, Any]:
        """What the checkpoint says about itself, for the Checkpoint panel."""
        return {} if self.info is None else describe(self.info)

    # ------------------------------------------------------------------ keys
    def _raw_key(self, latent: LatentState) -> Hashable:
        return (self._generation, latent)  # the generation: keys of another model never match

    def _shown_key(self, state: ExplorerState) -> Hashable:
        return (self._raw_key(state.latent), state.levels, state.render.mode == "levels")

    def _frame_key(self, state: ExplorerState) -> Hashable:
        return (self._shown_key(state), state.camera, state.render, self.backend)

    # ------------------------------------------------------------------ generator
    def _require_generator(self) -> Generator:
        if self.generator is None:
            raise ConfigError("no checkpoint is loaded")
        return self.generator

    def ws(self, latent: LatentState) -> Tensor:  # [1, num_ws, w_dim]
        """The edited latent: truncation, A->B interpolation, per-level mixing, directions."""
        return edited_ws(self._require_generator(), latent, self.device, self._c, self.directions, self.direction_stds)

    def gaussians(self, latent: LatentState) -> Gaussians:
        """The generator's output for `latent`, unbatched [N, ...] on the engine's device (cached)."""
        with self._lock:
            return self._raw.get(self._raw_key(latent), lambda: self._generate(latent))

    def _generate(self, latent: LatentState) -> Gaussians:
        G = self._require_generator()
        _sync(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            ws = self.ws(latent)
            if self._graphed is not None:
                out = self._graphed(ws)  # a clone: the graph's buffers are reused by the next call
            elif self.precision == "bf16" and self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = G.synthesize(ws)
                out = out.to(torch.float32)
            else:
                out = G.synthesize(ws)
        _sync(self.device)
        self.stats.generator_ms = (time.perf_counter() - start) * 1e3
        self.stats.generator_calls += 1
        return out.scene(0)

    # ------------------------------------------------------------------ edits after the generator
    def shown_gaussians(self, state: ExplorerState) -> tuple[Gaussians, Tensor]:
        """(the Gaussians to draw, their indices [M] in the raw output), after the level edits."""
        with self._lock:
            raw = self.gaussians(state.latent)
            colour_by_level = state.levels.color_by_level or state.render.mode == "levels"
            return self._shown.get(self._shown_key(state), lambda: display_edits(raw, state.levels, colour_by_level))

    def export_gaussians(self, state: ExplorerState) -> Gaussians:
        """The generator's Gaussians under the current level filter (no display-only edits)."""
        with self._lock:
            raw = self.gaussians(state.latent)
            return raw.select(shown_mask(raw.level, state.levels)).to("cpu")

    def level_counts(self, state: ExplorerState) -> dict[int, int]:
        """{level: count} of the generator's output (background under -1)."""
        return self.gaussians(state.latent).count_per_level()

    def level_shares(self, state: ExplorerState, max_size: int = 256) -> dict[int, float]:
        """{level: mean change of the head's pixels without it} in the current view, RGB in [0, 1].

        All generated levels, as the generator made them (no display edits), at the current camera and
        at most `max_size` pixels. Near 0: a dead level. Cached by latent and camera.
        """
        with self._lock:
            raw = self.gaussians(state.latent)
            size = min(int(state.render.resolution), max_size)
            camera_model = self.generator.config.camera_model
            key = (self._raw_key(state.latent), state.camera, size, self.backend)

            def measure() -> dict[int, float]:
                cam2world, K_norm = viewer_cameras(state.camera)
                viewmats, Ks = (t.to(self.device) for t in to_rasterizer(cam2world, K_norm, size, size, camera_model))
                with torch.inference_mode():
                    return level_contributions(raw, viewmats[None], Ks[None], size, size, self.backend)

            return self._shares.get(key, measure)

    def descendant_indices(self, state: ExplorerState, index: int) -> Tensor:  # [M] int64
        """Indices (in the generator's output) of the subtree under Gaussian `index`, itself included."""
        return self.gaussians(state.latent).descendant_mask(int(index)).nonzero().squeeze(-1).cpu()

    # ------------------------------------------------------------------ frames
    def frame(self, state: ExplorerState) -> Frame:
        """The image for `state`: from the cache if nothing it depends on changed."""
        with self._lock:
            shown, index = self.shown_gaussians(state)
            rendered = self._frames.get(self._frame_key(state), lambda: self._render(shown, index, state))
            self._last_frame = rendered
            self.stats.num_gaussians = rendered.frame.num_gaussians
            return rendered.frame

    def _render(self, shown: Gaussians, index: Tensor, state: ExplorerState) -> _RenderedFrame:
        settings = state.render
        if settings.mode not in RENDER_MODES:
            raise ConfigError(f"unknown render mode {settings.mode!r}; choose one of {', '.join(RENDER_MODES)}")
        size = check_resolution(settings.resolution)
        _sync(self.device)
        start = time.perf_counter()
        # Camera maths on the host (a few dozen tiny ops: launching them on a GPU costs more than
        # they do, and some would synchronise), then one small copy.
        cam2world, K_norm = viewer_cameras(state.camera)
        viewmats, Ks = (t.to(self.device, non_blocking=True)
                        for t in to_rasterizer(cam2world, K_norm, size, size, self.generator.config.camera_model))
        background = torch.tensor(settings.background, dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            out = render(shown, viewmats[None], Ks[None], size, size, background=background, backend=self.backend)
            alpha, depth = out.alpha[0, ..., 0], out.depth[0, ..., 0]  # [H, W]
            if settings.mode == "alpha":
                rgb = alpha[..., None].expand(size, size, 3)
            elif settings.mode == "depth":
                rgb = depth_colours(depth, alpha, background)
            else:
                rgb = out.rgb[0]
            image = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()  # [H, W, 3]
        self.stats.render_ms = (time.perf_counter() - start) * 1e3
        self.stats.render_calls += 1
        frame = Frame(image=image, num_gaussians=shown.num_gaussians, key=self._frame_key(state))
        return _RenderedFrame(frame, depth, alpha, cam2world, K_norm, index)

    def render_image(self, state: ExplorerState) -> np.ndarray:  # [H, W, 3] uint8
        """One frame, bypassing the frame cache (recording: every frame differs anyway)."""
        with self._lock:
            shown, index = self.shown_gaussians(state)
            return self._render(shown, index, state).frame.image

    # ------------------------------------------------------------------ picking
    def pick(self, state: ExplorerState, x: float, y: float) -> int | None:
        """The level-0 ancestor (index in the generator's output) of the Gaussian seen at pixel
        (x, y) of the frame for `state`, or None where the image is empty there."""
        with self._lock:
            self.frame(state)
            rendered = self._last_frame
            size = int(state.render.resolution)
            px, py = int(x), int(y)
            if not (0 <= px < size and 0 <= py < size):
                return None
            if float(rendered.alpha[py, px]) < PICK_MIN_ALPHA:
                return None
            z = float(rendered.depth[py, px])
            K = rendered.K_norm
            fx, fy, cx, cy = float(K[0, 0]) * size, float(K[1, 1]) * size, float(K[0, 2]) * size, float(K[1, 2]) * size
            point_cam = torch.tensor([(px + 0.5 - cx) / fx * z, (py + 0.5 - cy) / fy * z, z])
            point = (rendered.cam2world[:3, :3] @ point_cam + rendered.cam2world[:3, 3]).to(self.device)  # [3] world
            raw = self.gaussians(state.latent)
            candidates = rendered.shown_index[raw.level[rendered.shown_index] >= 0]  # foreground only
            if candidates.numel() == 0:
                return None
            distances = (raw.means[candidates] - point).norm(dim=-1)
            nearest = int(candidates[int(distances.argmin())])
            return raw.ancestor(nearest, level=0)

    # ------------------------------------------------------------------ reporting
    def backend_name(self) -> str:
        return backend_report(self.device) if self.backend == "auto" else self.backend

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return "CPU"

    def gpu_memory_mb(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return None


def describe(info: CheckpointInfo) -> dict[str, Any]:
    """What a checkpoint says about itself: preset, resolution, Gaussians per level, kimg, dataset."""
    config = info.config
    return {
        "path": info.path,
        "preset": preset_name(config),
        "resolution": info.resolution,
        "gaussians per level": {l: config.gaussians_at_level(l) for l in range(config.num_levels)},
        "background Gaussians": config.num_background_gaussians,
        "kimg": info.kimg,
        "dataset": info.dataset.get("name", "") or "(not named)",
    }


def preset_name(config) -> str:
    """The closest preset, naming the fields that differ: "heads128 (background, anchor_floor_pixels)".
    Training flags such as --g-background false change a field or two; more than three differ: "custom"."""
    from gsgan_core.models.config import PRESETS

    def changed(candidate) -> list[str]:
        return [field.name for field in dataclasses.fields(config)
                if field.name != "image_resolution" and getattr(config, field.name) != getattr(candidate, field.name)]

    same_kind = {name: c for name, c in PRESETS.items() if type(c) is type(config)}
    name, fields = min(((name, changed(candidate)) for name, candidate in same_kind.items()), key=lambda item: len(item[1]))
    if not fields:
        return name
    if len(fields) > 3:
        return "custom"
    return f"{name} ({', '.join(fields)})"


def interactive_engine(device: torch.device) -> Engine:
    """The engine as the explorer and the commands use it: on CUDA with TF32 matmuls and the
    synthesis replayed as a CUDA graph (see docs/BENCHMARKS.md, explorer section)."""
    cuda = device.type == "cuda"
    return Engine(device, precision="tf32" if cuda else "fp32", cuda_graph=cuda)
