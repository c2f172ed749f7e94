"""What the viewer does to generated Gaussians after the generator, and to a frame after the
rasterizer: the level filter, colour by level, subtree highlight, centres as dots, scale, and
the depth colormap. Pure functions of tensors and state parts; the engine caches their results.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from gsgan_core.errors import ConfigError
from gsgan_core.gaussians import BACKGROUND_LEVEL, SH_C0, Gaussians

from .state import LEVEL_MODES, LevelState

# Level colours, coarse to fine (then cycling); the background is grey.
LEVEL_PALETTE = (
    (0.90, 0.22, 0.20),
    (0.96, 0.62, 0.12),
    (0.35, 0.75, 0.30),
    (0.20, 0.55, 0.92),
    (0.58, 0.35, 0.85),
    (0.88, 0.40, 0.70),
)
BACKGROUND_COLOUR = (0.55, 0.55, 0.55)
DIMMED_COLOUR_FACTOR = 0.25  # Gaussians outside a selected subtree: darker ...
DIMMED_OPACITY_FACTOR = 0.15  # ... and mostly transparent
DOT_SIZE = 0.004  # world-space standard deviation of a "centres as dots" Gaussian
# A 5-stop approximation of the turbo colormap: near is warm, far is cool.
_DEPTH_STOPS = np.array(
    [[0.98, 0.90, 0.20], [0.98, 0.50, 0.10], [0.85, 0.15, 0.15], [0.35, 0.20, 0.70], [0.10, 0.10, 0.35]],
    dtype=np.float32,
)


def level_colours(level: Tensor) -> Tensor:  # [N] int64 -> [N, 3] RGB in [0, 1]
    palette = torch.tensor(LEVEL_PALETTE + (BACKGROUND_COLOUR,), dtype=torch.float32, device=level.device)
    index = torch.where(level == BACKGROUND_LEVEL, len(LEVEL_PALETTE), level % len(LEVEL_PALETTE))
    return palette[index]


def shown_mask(level: Tensor, levels: LevelState) -> Tensor:  # [N] int64 -> [N] bool
    """Which Gaussians the level filter keeps."""
    if levels.mode not in LEVEL_MODES:
        raise ConfigError(f"unknown level mode {levels.mode!r}; choose one of {', '.join(LEVEL_MODES)}")
    if levels.mode == "all":
        mask = level >= 0
    elif levels.mode == "up_to":
        mask = (level >= 0) & (level <= levels.level)
    else:
        mask = level == levels.level
    if levels.background:
        mask = mask | (level == BACKGROUND_LEVEL)
    return mask


def keep_levels(gaussians: Gaussians, levels: list[int] | None, background: bool) -> Gaussians:
    """The Gaussians of the listed levels (None: every level), with or without the background."""
    mask = gaussians.level >= 0
    if levels is not None:
        mask = torch.isin(gaussians.level, torch.tensor(levels, dtype=torch.long, device=gaussians.level.device))
    if background:
        mask = mask | (gaussians.level == BACKGROUND_LEVEL)
    return gaussians.select(mask)


def _with_rgb(gaussians: Gaussians, rgb: Tensor) -> Gaussians:  # rgb [..., N, 3]
    return replace(gaussians, sh_dc=(rgb - 0.5) / SH_C0)


def display_edits(raw: Gaussians, levels: LevelState, colour_by_level: bool) -> tuple[Gaussians, Tensor]:
    """(the Gaussians to draw, their indices [M] in `raw`): the level filter and the display-only
    edits of `levels`; `colour_by_level` also when the render mode shows levels."""
    g = raw
    if colour_by_level:
        g = _with_rgb(g, level_colours(g.level).to(g.means.dtype))
    if levels.selected is not None:
        inside = raw.descendant_mask(int(levels.selected)).to(g.means.device)  # [N]
        rgb = torch.where(inside[:, None], g.rgbs, g.rgbs * DIMMED_COLOUR_FACTOR)
        opacity = torch.where(inside, g.opacities, g.opacities * DIMMED_OPACITY_FACTOR)
        g = replace(_with_rgb(g, rgb), opacity_logits=torch.logit(opacity.clamp(1e-6, 1 - 1e-6)))
    if levels.centres:
        g = replace(
            g,
            log_scales=torch.full_like(g.log_scales, math.log(DOT_SIZE)),
            quats=torch.zeros_like(g.quats).index_fill_(-1, torch.tensor([0], device=g.quats.device), 1.0),
            opacity_logits=torch.full_like(g.opacity_logits, 6.0),
        )
    if levels.scale != 1.0:
        if levels.scale <= 0:
            raise ConfigError(f"scale multiplier must be positive, got {levels.scale}")
        g = replace(g, log_scales=g.log_scales + math.log(levels.scale))
    if levels.mode == "all" and levels.background:  # every Gaussian shown: no mask, no copy
        return g, torch.arange(raw.num_gaussians, device=raw.level.device)
    index = shown_mask(raw.level, levels).nonzero().squeeze(-1)
    return g.select(index), index


def depth_colours(depth: Tensor, alpha: Tensor, background: Tensor) -> Tensor:  # [H, W] -> [H, W, 3]
    """Depth through a colormap, normalised over the covered pixels, composited on the background."""
    covered = alpha > 0.5
    if bool(covered.any()):
        near, far = depth[covered].min(), depth[covered].max()
    else:
        near, far = depth.min(), depth.max()
    t = ((depth - near) / (far - near).clamp_min(1e-6)).clamp(0, 1)  # [H, W]
    stops = torch.from_numpy(_DEPTH_STOPS).to(depth.device)
    position = t * (len(stops) - 1)
    lo = position.floor().long().clamp(max=len(stops) - 2)
    frac = (position - lo)[..., None]
    colours = stops[lo] * (1 - frac) + stops[lo + 1] * frac  # [H, W, 3]
    a = alpha[..., None]
    return colours * a + background * (1 - a)
