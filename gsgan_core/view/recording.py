"""Recordings: camera/latent trajectories as lists of states, rendered by the engine into a file.

`gsgan-render` and the explorer's Record panel both call `record`, so a video from the command
line and one from the GUI are the same frames. A trajectory is a list of `ExplorerState`
snapshots (one per frame, one column per seed for a grid); the engine renders each as usual.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from gsgan_core.errors import ConfigError

from .engine import Engine
from .state import TRAJECTORIES, ExplorerState
from .video import FrameWriter

WOBBLE_YAW = 0.35  # EG3D's gen_videos.py swings yaw by +-0.35 rad ...
WOBBLE_PITCH = 0.15  # ... and pitch a little less


class Cancelled(Exception):
    """The recording was cancelled; nothing was written."""


def trajectory(
    base: ExplorerState, kind: str, frames: int, pitch: float | None = None, seeds: Sequence[int] | None = None
) -> list[ExplorerState]:
    """One state per frame.

    turntable: a full 360 degrees of yaw at `pitch` (default: the base camera's pitch).
    wobble:    EG3D-style yaw/pitch swing around the base camera.
    interp:    W-space interpolation through `seeds` in order (default: the base's seed A -> B),
               with the camera fixed; the first frame is the first seed, the last the last seed.
    """
    if kind not in TRAJECTORIES:
        raise ConfigError(f"unknown trajectory {kind!r}; choose one of {', '.join(TRAJECTORIES)}")
    if frames < 1:
        raise ConfigError(f"a recording needs at least one frame, got {frames}")
    states = []
    for i in range(frames):
        state, camera = base.copy(), base.camera
        if kind == "turntable":
            yaw = camera.yaw + 2 * math.pi * i / frames
            state.camera = replace(camera, yaw=yaw, pitch=camera.pitch if pitch is None else pitch)
        elif kind == "wobble":
            t = 2 * math.pi * i / frames
            state.camera = replace(camera, yaw=camera.yaw + WOBBLE_YAW * math.sin(t),
                                   pitch=camera.pitch + WOBBLE_PITCH * math.cos(t))
        else:
            state.latent = _interp_latent(base, i, frames, seeds)
        states.append(state)
    return states


def _interp_latent(base: ExplorerState, i: int, frames: int, seeds: Sequence[int] | None):
    """Frame i of a W-space walk through `seeds` (default: the base's seed A -> B)."""
    keys = list(seeds) if seeds is not None else [base.latent.seed_a, base.latent.seed_b]
    if len(keys) < 2:
        raise ConfigError("an interpolation needs at least two seeds")
    position = (len(keys) - 1) * (i / (frames - 1) if frames > 1 else 0.0)  # in [0, len - 1]
    segment = min(int(position), len(keys) - 2)
    return replace(base.latent, seed_a=keys[segment], seed_b=keys[segment + 1], interp=position - segment)


def with_seed(state: ExplorerState, seed: int) -> ExplorerState:
    out = state.copy()
    out.latent = replace(out.latent, seed_a=int(seed), interp=0.0)
    return out


def grid_image(images: Sequence[np.ndarray], background: Sequence[float]) -> np.ndarray:
    """Tiles equal-sized [H, W, 3] images into a near-square grid (row-major)."""
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w, _ = images[0].shape
    fill = (np.asarray(background, dtype=np.float32) * 255 + 0.5).astype(np.uint8)
    out = np.empty((rows * h, cols * w, 3), dtype=np.uint8)
    out[:] = fill
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    return out


def record(
    engine: Engine,
    frames: Sequence[Sequence[ExplorerState]],  # [num_frames][num_tiles] states; one tile = a plain video
    out: str | Path,
    fps: float,
    progress: Callable[[int, int], None] | None = None,  # called with (frames done, total)
    cancel: threading.Event | None = None,
) -> list[Path]:
    """Renders every frame (tiles side by side in a grid) and writes the file(s) atomically.

    Raises Cancelled (nothing written) if `cancel` is set; OutputError if `out` cannot be written.
    """
    total = len(frames)
    with FrameWriter(out, fps, expected_frames=total) as writer:
        for i, tiles in enumerate(frames):
            if cancel is not None and cancel.is_set():
                writer.abort()
                raise Cancelled(f"recording to {out} cancelled after {i} of {total} frames")
            images = [engine.render_image(state) for state in tiles]
            image = images[0] if len(images) == 1 else grid_image(images, tiles[0].render.background)
            writer.append(image)
            if progress is not None:
                progress(i + 1, total)
        return writer.commit()
