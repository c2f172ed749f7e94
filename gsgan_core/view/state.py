"""The viewer's state: plain data that the explorer's panels write and the engine reads.

Each part is a frozen, hashable dataclass holding exactly what one stage of the engine depends
on, so the parts themselves are the engine's cache keys (see engine.py). A panel never edits a
part in place; it replaces it (`state.latent = replace(state.latent, seed_a=5)`), and once per
frame the engine recomputes only the stages whose parts changed. What only the window needs
(animation toggles, readouts) belongs to the panels, not here. The same objects drive
`gsgan-render`, so the command line and the GUI share one code path.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from gsgan_core.cameras import FFHQ_FOV_DEG, FFHQ_PIVOT
from gsgan_core.errors import ConfigError

LEVEL_MODES = ("all", "up_to", "only")  # show every level, levels 0..k, or level k alone
RENDER_MODES = ("rgb", "depth", "alpha", "levels")
TRAJECTORIES = ("turntable", "wobble", "interp")
RESOLUTION_RANGE = (8, 4096)  # pixels per side of a rendered frame


def check_resolution(size: int, what: str = "resolution") -> int:
    """`size` as an int if it is a renderable frame size, else ConfigError naming `what`."""
    lo, hi = RESOLUTION_RANGE
    if not lo <= int(size) <= hi:
        raise ConfigError(f"{what} must be between {lo} and {hi} pixels, got {size}")
    return int(size)


def _as_tuple(part, name: str, kind: type) -> None:
    """Stores field `name` of a frozen part as a tuple of `kind` (widgets hand out lists)."""
    object.__setattr__(part, name, tuple(kind(v) for v in getattr(part, name)))


@dataclass(frozen=True)
class LatentState:
    """Which Gaussians to generate: everything the generator's output depends on."""

    seed_a: int = 0
    seed_b: int = 1
    latent_b: str = ""  # B is this latent held by the engine (an inversion, `Engine.add_latent`); "": seed B
    interp: float = 0.0  # position on the straight line from w(A) to w(B) in W space: 0 = A, 1 = B
    psi: float = 0.7  # truncation: 1 = none, 0 = the average w
    cutoff: int = 0  # truncate only ws rows [0, cutoff); 0 = every row
    take_b: tuple[bool, ...] = ()  # per level (then background): take that level's ws from B
    directions: tuple[float, ...] = ()  # strength of each principal direction of W, in standard deviations

    def __post_init__(self):
        _as_tuple(self, "take_b", bool)
        _as_tuple(self, "directions", float)


@dataclass(frozen=True)
class LevelState:
    """Which of the generated Gaussians to show, and how (edits after the generator)."""

    mode: str = "all"  # one of LEVEL_MODES
    level: int = 0  # k of "up_to" / "only"
    background: bool = True  # include the background Gaussians
    color_by_level: bool = False
    centres: bool = False  # draw every Gaussian as a small opaque dot at its mean
    scale: float = 1.0  # multiplies every Gaussian's scale (shrink to see structure)
    selected: int | None = None  # index (in the generator's output) of a level-0 Gaussian whose subtree is highlighted


@dataclass(frozen=True)
class CameraState:
    """A viewer orbit camera: the eye sits at `radius` from the *pivot* (not from the world origin)."""

    yaw: float = 0.0  # radians; positive moves the camera toward +x
    pitch: float = 0.0  # radians; positive raises the camera
    radius: float = 2.5
    pivot: tuple[float, float, float] = FFHQ_PIVOT
    fov_deg: float = FFHQ_FOV_DEG

    def __post_init__(self):
        _as_tuple(self, "pivot", float)


@dataclass(frozen=True)
class RenderSettings:
    resolution: int = 256
    mode: str = "rgb"  # one of RENDER_MODES
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        _as_tuple(self, "background", float)


@dataclass(frozen=True)
class RecordSettings:
    trajectory: str = "turntable"  # one of TRAJECTORIES
    frames: int = 60
    fps: int = 30
    resolution: int = 256
    pitch: float = 0.0  # turntable's elevation, radians
    out: str = "out/explorer.mp4"  # .mp4 (H.264), .gif or .png (numbered frames)
    screenshot: str = "out/screenshot.png"  # where the Screenshot button writes the current frame
    ply: str = "out/gaussians.ply"  # where Export PLY writes the current Gaussians


@dataclass
class ExplorerState:
    """One frozen part per panel; the container is the only mutable thing."""

    latent: LatentState = field(default_factory=LatentState)
    levels: LevelState = field(default_factory=LevelState)
    camera: CameraState = field(default_factory=CameraState)
    render: RenderSettings = field(default_factory=RenderSettings)
    record: RecordSettings = field(default_factory=RecordSettings)

    def copy(self) -> "ExplorerState":
        """A snapshot (e.g. for a recording that runs while the UI keeps editing); the parts are
        immutable, so sharing them is safe."""
        return dataclasses.replace(self)


def ping_pong(t: float) -> float:
    """Maps a time-like t >= 0 to 0 -> 1 -> 0 -> ... with period 2 (the animate toggle)."""
    phase = math.fmod(max(t, 0.0), 2.0)
    return phase if phase <= 1.0 else 2.0 - phase
