"""Generator configurations and the presets.

Two architectures, each with one config dataclass:
- "gsgan" (`GSGANConfig`, models/gsgan.py): the official GSGAN network, exactly; what the
  ffhq*/afhq* presets build and what imported official snapshots are.
- "lite" (`GeneratorConfig`, below; models/generator.py): gsgan's own GSGAN-like generator, with
  switches toward CGS-GAN (Barthel et al. 2025). The demo checkpoint is one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gsgan_core.errors import ConfigError
from gsgan_core.models.gsgan import GSGANConfig, official_config
from gsgan_core.models.hierarchy import w_slices

ATTENTION_KINDS = ("global", "knn", "local")


@dataclass(frozen=True)
class GeneratorConfig:
    """The lite architecture's settings."""

    architecture = "lite"  # class constants, not fields
    camera_model = "label"

    # --- latent and mapping network (StyleGAN2)
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0  # camera-label conditioning of the mapping (GSGAN: 25; CGS-GAN: 0)
    mapping_layers: int = 2
    mapping_lr_mul: float = 0.01
    w_avg_beta: float = 0.998

    # --- hierarchy: one entry per level, coarse to fine
    num_points: int = 256  # learnable input points = level-0 Gaussians
    channels: tuple[int, ...] = (512, 512, 512, 256, 128)  # token width of each level's output
    attention: tuple[str, ...] = ("global", "knn", "knn", "local", "local")  # block kind per level
    modulated: tuple[bool, ...] = (True, True, True, False, False)  # w-modulated block per level
    level0_layers: int = 6  # depth of level 0's global transformer
    num_heads: int = 8
    knn_k: int = 16  # neighbours of kNN attention (in feature space)
    up_ratio: int = 4  # children per parent
    mlp_ratio: int = 4

    # --- residual parameterisation (section 4 of the model reference)
    split_ratio: float = 2.0  # rho: a child's log-scale is >= log(rho) below a larger-than-pixel parent
    image_resolution: int = 256  # sets the "larger than a pixel" threshold 1 / R_img
    position_clamp: float = 1.0  # means clamped to [-p, p] (CGS-GAN: 0.5)
    soft_clamp: bool = False  # CGS-GAN's f(v) = 20 tanh(0.05 v) on scale/rotation/colour/opacity outputs
    # > 0: anchors (the parents of the next level, never drawn) keep every log-scale above
    # log(anchor_floor_pixels / image_resolution), through a softplus floor. 0 = GSGAN: only the
    # hard clamp at -8. An anchor at -8 caps its whole subtree below a pixel, and the clamp passes
    # no gradient, so a level whose anchors collapse there takes every finer level with it.
    anchor_floor_pixels: float = 0.0
    view_dependent_color: bool = True  # GSGAN: render-head colour sees a 32-d camera-direction embedding
    view_embed_dim: int = 32

    # --- background (GSGAN) or none (CGS-GAN composites on a random colour instead)
    background: bool = True
    background_points: int = 2000
    background_radius: float = 3.0

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_levels(self) -> int:
        return len(self.channels)

    def gaussians_at_level(self, level: int) -> int:
        return self.num_points * self.up_ratio**level

    @property
    def num_foreground_gaussians(self) -> int:
        return sum(self.gaussians_at_level(level) for level in range(self.num_levels))

    @property
    def num_background_gaussians(self) -> int:
        return self.background_points * self.up_ratio if self.background else 0

    @property
    def num_gaussians(self) -> int:
        return self.num_foreground_gaussians + self.num_background_gaussians

    @property
    def ws_per_level(self) -> tuple[int, ...]:
        """How many w vectors each level consumes (two per modulated block: attention and MLP)."""
        counts = []
        for level, modulated in enumerate(self.modulated):
            blocks = self.level0_layers if level == 0 else 1
            counts.append(2 * blocks if modulated else 0)
        return tuple(counts)

    @property
    def num_ws(self) -> int:
        """Reference configuration: 12 + 2 + 2 (+ 1 for the background) = 17."""
        return sum(self.ws_per_level) + (1 if self.background else 0)

    def w_slices(self) -> dict[int | str, slice]:
        """Which rows of ws [B, num_ws, w_dim] feed which level ("background" for the background)."""
        return w_slices(self.ws_per_level, self.background)

    # ------------------------------------------------------------------ checks and (de)serialisation
    def __post_init__(self):
        levels = len(self.channels)
        if levels < 1:
            raise ConfigError("channels must name at least one level")
        _check_ranges(self, positive=("z_dim", "w_dim", "mapping_layers", "num_points", "level0_layers", "num_heads",
                                      "knn_k", "up_ratio", "mlp_ratio", "image_resolution", "view_embed_dim",
                                      "background_points"),
                      positive_floats=("mapping_lr_mul", "position_clamp", "background_radius"))
        if self.c_dim < 0:
            raise ConfigError(f"c_dim must be >= 0, got {self.c_dim}")
        if not 0 <= self.w_avg_beta <= 1:
            raise ConfigError(f"w_avg_beta must be in [0, 1], got {self.w_avg_beta}")
        if len(self.attention) != levels or len(self.modulated) != levels:
            raise ConfigError(
                f"channels, attention and modulated need one entry per level: got {levels}, "
                f"{len(self.attention)}, {len(self.modulated)}"
            )
        for kind in self.attention:
            if kind not in ATTENTION_KINDS:
                raise ConfigError(f"unknown attention kind {kind!r}; known: {ATTENTION_KINDS}")
        if self.attention[0] != "global":
            raise ConfigError("level 0 has no parents, so its attention must be 'global'")
        for level, (c, kind) in enumerate(zip(self.channels, self.attention)):
            width_in = self.channels[max(level - 1, 0)]
            if width_in % self.num_heads:
                raise ConfigError(f"level {level}: width {width_in} is not divisible by num_heads={self.num_heads}")
            if kind == "local" and level < 2:
                raise ConfigError(f"level {level}: 'local' (sibling) attention needs tokens that have siblings (level >= 2)")
        if self.split_ratio <= 1:
            raise ConfigError("split_ratio must be > 1 so children are smaller than their parent")
        if not 0 <= self.anchor_floor_pixels < self.image_resolution:
            raise ConfigError(f"anchor_floor_pixels must be in [0, image_resolution), got {self.anchor_floor_pixels}")
        if self.knn_k > self.num_points:
            raise ConfigError(f"knn_k={self.knn_k} exceeds the number of level-0 tokens {self.num_points}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GeneratorConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown generator config keys: {unknown}")
        values = {}
        for name, value in data.items():
            if isinstance(value, list):  # JSON turns tuples into lists
                value = tuple(value)
            values[name] = value
        return cls(**values)


def _check_ranges(config, positive: tuple[str, ...], positive_floats: tuple[str, ...]) -> None:
    """Counts and widths at least 1 (every channel too), every float finite, the named floats above 0."""
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    if any(c < 1 for c in config.channels):
        raise ConfigError(f"channels must all be at least 1, got {config.channels}")
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name} must be a finite number, got {value}")
    for name in positive_floats:
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")


def _lite(levels: int, resolution: int) -> GeneratorConfig:
    return GeneratorConfig(
        channels=(512, 512, 512, 256, 128, 128)[:levels],
        attention=("global", "knn", "knn", "local", "local", "local")[:levels],
        modulated=(True, True, True, False, False, False)[:levels],
        image_resolution=resolution,
    )


AnyConfig = GeneratorConfig | GSGANConfig
ARCHITECTURES: dict[str, type] = {"lite": GeneratorConfig, "gsgan": GSGANConfig}

PRESETS: dict[str, AnyConfig] = {
    # The official GSGAN configurations (train.py --cfg=ffhq|afhq, 256 points): 87,296 (256 px, five
    # levels) and 349,440 (512 px, six levels) foreground Gaussians plus 10,000 background ones.
    # FFHQ and AFHQ share the generator; they differ in the camera pivot (OrbitPose defaults).
    "ffhq256": official_config(levels=5, resolution=256),
    "ffhq512": official_config(levels=6, resolution=512),
    "afhq256": official_config(levels=5, resolution=256),
    "afhq512": official_config(levels=6, resolution=512),
    # The official architecture at test size: every block kind, fp16 casts from level 1.
    "gsgan-tiny": GSGANConfig(
        z_dim=64, w_dim=64, num_points=32, channels=(32, 32, 16, 16), transformer_layers=2, num_heads=4,
        knn_k=8, pe_res=32, image_resolution=64, scale_init=-math.log(math.sqrt(32)),
        scale_threshold=-math.log(math.sqrt(32)), background_points=64, background_channels=16,
        view_embed_dim=16,
    ),
    # The lite architecture at the published sizes.
    "lite256": _lite(levels=5, resolution=256),
    "lite512": _lite(levels=6, resolution=512),
    # The shipped demo (assets/): 128 px heads, five levels like ffhq256 (256 -> 65,536 Gaussians) at
    # narrow widths, so that the fp16 file stays under 10 MiB and the training state stays small.
    "heads128": GeneratorConfig(
        z_dim=128,
        w_dim=128,
        num_points=256,
        channels=(192, 192, 128, 64, 32),
        attention=("global", "knn", "knn", "local", "local"),
        modulated=(True, True, True, False, False),
        level0_layers=2,
        num_heads=4,
        image_resolution=128,
        background_points=1000,
    ),
    # CPU tests and demos: every mechanism (global, kNN and sibling attention; modulated and
    # plain blocks; background; view-dependent colour) at small widths and four levels.
    "tiny": GeneratorConfig(
        z_dim=64,
        w_dim=64,
        num_points=64,
        channels=(64, 64, 32, 32),
        attention=("global", "knn", "local", "local"),
        modulated=(True, True, False, False),
        level0_layers=2,
        num_heads=4,
        knn_k=8,
        image_resolution=64,
        view_embed_dim=16,
        background_points=128,
    ),
}


def preset(name: str, **overrides) -> AnyConfig:
    """A preset by name, with fields replaced by `overrides` (e.g. preset("tiny", background=False))."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    try:
        return dataclasses.replace(PRESETS[name], **overrides)
    except TypeError as err:
        raise ConfigError(f"bad override for preset {name!r}: {err}") from None


def level0_log_scale(config: GeneratorConfig) -> float:
    """Level-0 base log-scale log(1/sqrt(num_points)): points of unit-cube density just touch."""
    return math.log(1.0 / math.sqrt(config.num_points))


def config_from_dict(data: dict, architecture: str = "lite") -> AnyConfig:
    """A config of the named architecture from its to_dict() (ConfigError on unknown names or keys)."""
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture].from_dict(data)
