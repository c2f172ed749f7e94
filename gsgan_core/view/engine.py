"""The headless engine: model, caches and camera in, a frame (a numpy image) out. No UI here.
`RenderWorker` runs an engine in a thread of its own, so that a window never waits for a frame.

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
import math
import os
import threading
import time
from collections import OrderedDict, deque
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
from .latent import check_latent, conditioning_label, edited_ws, mixable_parts, principal_directions
from .state import RENDER_MODES, CameraState, ExplorerState, LatentState, check_resolution
from .viewer_camera import camera_from_orbit_pose, viewer_cameras

PICK_MIN_ALPHA = 0.2  # clicking where the image is this transparent clears the selection
FRAMING_MARGIN = 1.08  # the default view leaves this much room around the model's bounding sphere
FRAMING_QUANTILE = 0.995  # ... the sphere holding this share of the visible Gaussians' extents
FRAMING_MIN_OPACITY = 0.1  # Gaussians fainter than this do not count as the model's extent


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
    backend: str = ""  # the rasterizer the last frame was drawn with ("compiled", "gsplat", "reference")
    resolution: int = 0  # the last frame's size in pixels


def to_uint8(rgb: Tensor) -> np.ndarray:  # [H, W, 3] float in [0, 1] (clamped here) -> uint8, on the host
    """The frame as 8-bit RGB. On the CPU in numpy: PyTorch's element-wise ops split each op over
    its intra-op threads and wait for all of them, which costs milliseconds per op on a loaded machine."""
    if rgb.device.type != "cpu":
        return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    values = np.clip(rgb.float().numpy(), 0, 1) * 255 + 0.5
    return values.astype(np.uint8)


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

    `device`: where the generator and rasterizer run. `generator_threads` (CPU only): PyTorch's
    intra-op threads while the engine works (the generator, a frame's tensor work), or "auto"
    (`cpu_threads`: half the cores, 1 on a 2-core machine). `precision` (CUDA only; the rasterizer
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
        generator_threads: int | str = "auto",
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
        self.latents: dict[str, Tensor] = {}  # held latents [1, num_ws, w_dim] (CPU) by name: LatentState.latent_b
        self._raw = _LRU(8)
        self._shown = _LRU(8)
        self._frames = _LRU(4)
        self._shares = _LRU(4)
        self._last_frame: _RenderedFrame | None = None
        self._framing: tuple[int, tuple[tuple[float, float, float], float]] | None = None
        self.generator_threads = generator_threads
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
        with self._lock:  # no frame of the render worker runs on the GPU while the graph is captured
            graphed = None
            if self.cuda_graph:
                from gsgan_core.models.graphed import GraphedSynthesis

                try:
                    graphed = GraphedSynthesis(generator, batch_size=1)
                    self.graph_problem = None
                except Exception as err:  # capture can fail on odd set-ups; eager gives the same result
                    self.graph_problem = f"{type(err).__name__}: {err}"
            self._graphed = graphed
            self.generator, self.info = generator, info
            self.directions, self.direction_stds = directions, stds
            self._c = conditioning_label(generator, info.camera, self.device)  # [1, 25] or None
            self._generation += 1
            for cache in (self._raw, self._shown, self._frames, self._shares):
                cache.clear()
            self._last_frame = None

    def add_latent(self, name: str, ws: Tensor) -> str:
        """Holds `ws` [1, num_ws, w_dim] (e.g. an inversion) under a name that `LatentState.latent_b`
        can point to; returns the name used ("name (2)" etc. if taken: a name never changes its ws,
        so cache keys stay true). The latents outlive loads; one that does not fit the model is refused."""
        ws = ws.detach().float().cpu().reshape(1, *ws.shape[-2:]).clone()
        with self._lock:
            if self.generator is not None:
                check_latent(self.generator, name, ws)
            unique, n = name, 1
            while unique in self.latents and not torch.equal(self.latents[unique], ws):
                n += 1
                unique = f"{name} ({n})"
            self.latents[unique] = ws
            return unique

    def default_camera(self) -> CameraState:
        """The checkpoint's view (its yaw, pitch and field of view) framed on the model: the pivot at
        the centre of the Gaussians of the default latent, the radius such that their bounding sphere
        fits the field of view (`framing`). The FFHQ view when nothing is loaded."""
        pose = self.info.camera if self.info is not None else OrbitPose()
        camera = camera_from_orbit_pose(pose)
        if self.generator is None:
            return camera
        framed = self._framing
        if framed is None or framed[0] != self._generation:  # once per model (the lock only then:
            with self._lock:  # a UI's reset button must not wait for a frame being rendered)
                framed = (self._generation, framing(self.gaussians(LatentState())))
                self._framing = framed
        centre, extent = framed[1]
        if extent <= 0:
            return camera
        radius = FRAMING_MARGIN * extent / math.sin(math.radians(camera.fov_deg) / 2)
        return dataclasses.replace(camera, pivot=centre, radius=radius)

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
        # No mixing and zero directions mean the same ws however many entries spell them out.
        latent = dataclasses.replace(latent, take_b=latent.take_b if any(latent.take_b) else (),
                                     directions=latent.directions if any(latent.directions) else ())
        return (self._generation, latent)  # the generation: keys of another model never match

    def _shown_key(self, state: ExplorerState) -> Hashable:
        return (self._raw_key(state.latent), state.levels, state.render.mode == "levels")

    def _frame_key(self, state: ExplorerState) -> Hashable:
        return (self._shown_key(state), state.camera, state.render, self.backend)

    def frame_key(self, state: ExplorerState) -> Hashable:
        """The key `frame(state).key` will have, without computing anything (equal keys: equal images)."""
        return self._frame_key(state)

    # ------------------------------------------------------------------ generator
    def _require_generator(self) -> Generator:
        if self.generator is None:
            raise ConfigError("no checkpoint is loaded")
        return self.generator

    def ws(self, latent: LatentState) -> Tensor:  # [1, num_ws, w_dim]
        """The edited latent: truncation, A->B interpolation, per-level mixing, directions."""
        return edited_ws(self._require_generator(), latent, self.device, self._c, self.directions, self.direction_stds,
                         self.latents)

    def gaussians(self, latent: LatentState) -> Gaussians:
        """The generator's output for `latent`, unbatched [N, ...] on the engine's device (cached)."""
        with self._lock:
            return self._raw.get(self._raw_key(latent), lambda: self._generate(latent))

    def _generate(self, latent: LatentState) -> Gaussians:
        G = self._require_generator()
        _sync(self.device)
        start = time.perf_counter()
        with torch.inference_mode(), _intra_op_threads(self._threads()):  # (a no-op inside frame())
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

    def _threads(self) -> int | None:
        """PyTorch threads for the generator and a frame's tensor work now (None: leave them as they are)."""
        if self.device.type != "cpu":
            return None
        if self.generator_threads == "auto":
            return cpu_threads(torch.get_num_threads())
        return max(1, int(self.generator_threads))

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

    def level_sizes(self) -> dict[int, int]:
        """{level: Gaussians per scene} from the configuration (background under -1), without generating."""
        if self.generator is None:
            return {}
        config = self.generator.config
        sizes = {level: config.gaussians_at_level(level) for level in range(config.num_levels)}
        if config.num_background_gaussians:
            sizes[-1] = config.num_background_gaussians
        return sizes

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
        with self._lock, _intra_op_threads(self._threads()):
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
            image = to_uint8(rgb)  # [H, W, 3]
        self.stats.render_ms = (time.perf_counter() - start) * 1e3
        self.stats.render_calls += 1
        self.stats.backend = out.backend
        self.stats.resolution = size
        frame = Frame(image=image, num_gaussians=shown.num_gaussians, key=self._frame_key(state))
        return _RenderedFrame(frame, depth, alpha, cam2world, K_norm, index)

    def render_image(self, state: ExplorerState) -> np.ndarray:  # [H, W, 3] uint8
        """One frame, bypassing the frame cache (recording: every frame differs anyway)."""
        with self._lock, _intra_op_threads(self._threads()):
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
        """The rasterizer frames use, in words (a viewer's frames need no gradient)."""
        return backend_report(self.device, needs_grad=False) if self.backend == "auto" else self.backend

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return "CPU"

    def gpu_memory_mb(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return None


def framing(gaussians: Gaussians) -> tuple[tuple[float, float, float], float]:
    """(centre, radius) of the sphere around the model: the centre of the box holding the visible
    foreground Gaussians' extents (mean +- 2 sigma along the longest axis, 0.5 % trimmed at each end),
    the radius holding `FRAMING_QUANTILE` of them. (0, 0) when nothing is visible."""
    g = gaussians.foreground()
    with torch.inference_mode():
        means, opacity = g.means.float().cpu(), g.opacities.float().cpu()
        if means.numel() == 0:
            return (0.0, 0.0, 0.0), 0.0
        visible = opacity >= FRAMING_MIN_OPACITY
        if int(visible.sum()) >= 8:
            means, reach = means[visible], 2 * g.scales.float().cpu()[visible].amax(-1)
        else:
            reach = 2 * g.scales.float().cpu().amax(-1)
        reach = reach.clamp(max=float(means.std(0).norm()) + 1e-6)  # a huge faint blob is not the head
        lo = torch.quantile(means - reach[:, None], 1 - FRAMING_QUANTILE, dim=0)
        hi = torch.quantile(means + reach[:, None], FRAMING_QUANTILE, dim=0)
        centre = (lo + hi) / 2
        radius = torch.quantile((means - centre).norm(dim=-1) + reach, FRAMING_QUANTILE)
    return tuple(float(v) for v in centre), float(radius)


def cpu_threads(most: int) -> int:
    """PyTorch threads for the engine's work on the CPU: half the cores this process may use (at least
    1, at most `most`). Each parallel PyTorch op waits for its slowest thread, and a thread that shares
    its core with another busy process waits a scheduler time slice, milliseconds, per op: on a busy
    2-core CPU the demo's generator runs about 5x slower with 2 threads than with 1, while on an idle
    one 2 threads save only about a third. The other half of the cores stays with the UI thread and the
    rest of the machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(most, cores // 2))


class _intra_op_threads:
    """Context manager: torch.set_num_threads(n) inside (n None: unchanged), the old value after."""

    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n is not None and self.n != torch.get_num_threads():
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)


# ---------------------------------------------------------------------------- rendering in a thread
@dataclass
class FrameResult:
    """What the worker hands back for one frame request: the frame, or the error that stopped it."""

    key: Hashable  # the engine's frame key of the state rendered
    state: ExplorerState  # that state (a preview's has its reduced resolution)
    preview: bool  # rendered at a reduced resolution while the view moves
    frame: Frame | None = None
    error: str | None = None  # "TypeName: message" of an exception, else None
    seconds: float = 0.0  # wall time of the request, generator included
    generator_ran: bool = False
    render_ms: float | None = None  # the rasterizer's part (None: the frame came from the cache)
    finished: float = 0.0  # time.perf_counter() when it was done


@dataclass
class JobResult:
    """A one-off job's outcome (`RenderWorker.submit`): its value, or the exception it raised."""

    done: Callable[["JobResult"], None] | None
    value: Any = None
    error: BaseException | None = None


class RenderWorker:
    """An engine in a thread of its own: the UI asks, the worker renders, the UI picks the frame up.

    `request(state)` replaces any request not started yet (a newer state makes an older one stale);
    the worker always renders the latest. `poll()` returns the newest finished frame, once.
    Exceptions are caught and handed back in the result, like StyleGAN3's visualizer does, so the UI
    can show them and carry on. `submit(fn, done)` runs fn(engine) once, before any frame waiting
    (clicks, screenshots: things the user asked for once), and `finished_jobs()` hands back the
    outcomes so that the UI thread calls `done` with them. The engine keeps its own lock, so a
    recording thread can share it.
    """

    def __init__(self, engine: Engine, name: str = "gsgan-render"):
        self.engine = engine
        self._cv = threading.Condition()
        self._request: tuple[ExplorerState, bool, Hashable] | None = None
        self._jobs: deque[tuple[Callable[[Engine], Any], Callable | None]] = deque()
        self._result: FrameResult | None = None
        self._finished: list[JobResult] = []
        self._active: Hashable | None = None  # key of the frame being rendered now
        self._job_running = False
        self._closed = False
        self.requested = 0  # frame requests made
        self.dropped = 0  # ... replaced by a newer one before they started
        self.delivered = 0  # ... rendered (or failed) and handed back
        self.history: deque[tuple[int, bool, float]] = deque(maxlen=512)  # (resolution, preview, seconds)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the UI's side
    def request(self, state: ExplorerState, preview: bool = False) -> Hashable:
        """Asks for the frame of `state` (a snapshot is taken); returns its key."""
        snapshot = state.copy()
        key = self.engine.frame_key(snapshot)
        with self._cv:
            if self._request is not None:
                self.dropped += 1
            self._request = (snapshot, preview, key)
            self.requested += 1
            self._cv.notify()
        return key

    def submit(self, fn: Callable[[Engine], Any], done: Callable[[JobResult], None] | None = None) -> None:
        with self._cv:
            self._jobs.append((fn, done))
            self._cv.notify()

    def poll(self) -> FrameResult | None:
        """The newest frame finished since the last poll, or None."""
        with self._cv:
            result, self._result = self._result, None
            return result

    def finished_jobs(self) -> list[JobResult]:
        with self._cv:
            finished, self._finished = self._finished, []
            return finished

    def pending(self) -> Hashable | None:
        """The key of the frame waiting or being rendered, or None."""
        with self._cv:
            return self._request[2] if self._request is not None else self._active

    @property
    def idle(self) -> bool:
        with self._cv:
            return (self._request is None and self._active is None and not self._jobs and not self._job_running
                    and self._result is None and not self._finished)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Waits until nothing is queued or running (results may wait to be polled); False on timeout."""
        deadline = time.perf_counter() + timeout
        with self._cv:
            while self._request is not None or self._active is not None or self._jobs or self._job_running:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def close(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._closed = True
            self._request = None
            self._jobs.clear()
            self._cv.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker's side
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and self._request is None and not self._jobs:
                    self._cv.wait()
                if self._closed:
                    return
                if self._jobs:
                    job, request = self._jobs.popleft(), None
                    self._job_running = True
                else:
                    job, request = None, self._request
                    self._request = None
                    self._active = request[2]
            if job is not None:
                outcome = JobResult(job[1])
                try:
                    outcome.value = job[0](self.engine)
                except Exception as err:  # handed to the UI, which says so
                    outcome.error = err
                with self._cv:
                    self._finished.append(outcome)
                    self._job_running = False
                    self._cv.notify_all()
                continue
            state, preview, key = request
            result = FrameResult(key=key, state=state, preview=preview)
            calls, renders = self.engine.stats.generator_calls, self.engine.stats.render_calls
            start = time.perf_counter()
            try:
                result.frame = self.engine.frame(state)
                result.key = result.frame.key
            except Exception as err:  # shown in the status bar; the worker keeps going
                result.error = f"{type(err).__name__}: {err}"
            result.finished = time.perf_counter()
            result.seconds = result.finished - start
            result.generator_ran = self.engine.stats.generator_calls != calls
            if self.engine.stats.render_calls != renders:
                result.render_ms = self.engine.stats.render_ms
            with self._cv:
                self._result = result
                self._active = None
                self.delivered += 1
                self.history.append((int(state.render.resolution), preview, result.seconds))
                self._cv.notify_all()


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
