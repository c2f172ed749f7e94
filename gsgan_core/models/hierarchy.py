"""What both generator architectures share: the per-level Gaussian parameters and the output order.

The output is every level's drawn Gaussians, coarse to fine, then the background; child j of the
i-th Gaussian of level l-1 is the (up_ratio * i + j)-th Gaussian of level l.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from gsgan_core.gaussians import BACKGROUND_LEVEL, Gaussians

FRONTAL_VIEW_DIR = (0.0, 0.0, -1.0)  # the forward vector of a camera on +z looking at the origin


class Params(NamedTuple):
    """Unactivated Gaussian parameters of one level, all [B, N, k]."""

    mean: Tensor  # [B, N, 3]
    log_scale: Tensor  # [B, N, 3]
    quat: Tensor  # [B, N, 4] (w, x, y, z)
    color: Tensor  # [B, N, 3] degree-0 SH
    opacity: Tensor  # [B, N, 1] logit


def w_slices(ws_per_level: tuple[int, ...], background: bool) -> dict[int | str, slice]:
    """Which rows of ws [B, num_ws, w_dim] feed which level ("background" for the background, last)."""
    out: dict[int | str, slice] = {}
    start = 0
    for level, count in enumerate(ws_per_level):
        out[level] = slice(start, start + count)
        start += count
    if background:
        out["background"] = slice(start, start + 1)
    return out


def concat_gaussians(parts: list[Params], level: Tensor, parent: Tensor) -> Gaussians:
    """The Gaussians of every part (levels, then the background) as one set, in that order."""
    return Gaussians(
        means=torch.cat([p.mean for p in parts], dim=1),
        log_scales=torch.cat([p.log_scale for p in parts], dim=1),
        quats=torch.cat([p.quat for p in parts], dim=1),
        opacity_logits=torch.cat([p.opacity for p in parts], dim=1).squeeze(-1),
        sh_dc=torch.cat([p.color for p in parts], dim=1),
        level=level,
        parent=parent,
    )


def hierarchy_indices(config) -> tuple[Tensor, Tensor]:  # either architecture's config
    """level [N] and parent [N] (int64) of the output order: levels 0..L-1, then the background.

    Child j of the i-th Gaussian of level l-1 is the (up_ratio * i + j)-th Gaussian of level l.
    """
    levels, parents, offset = [], [], 0
    for level in range(config.num_levels):
        n = config.gaussians_at_level(level)
        levels.append(torch.full((n,), level))
        if level == 0:
            parents.append(torch.full((n,), -1))
        else:
            previous = config.gaussians_at_level(level - 1)
            parents.append(offset - previous + torch.arange(n) // config.up_ratio)
        offset += n
    if config.background:
        n = config.num_background_gaussians
        levels.append(torch.full((n,), BACKGROUND_LEVEL))
        parents.append(torch.full((n,), -1))
    return torch.cat(levels).long(), torch.cat(parents).long()


def w_avg_of(G: torch.nn.Module) -> Tensor:
    """The tracked average w [w_dim] of either architecture: `G.mapping.w_avg` (lite) or
    `G.mapping_network.w_avg` (official)."""
    mapping = getattr(G, "mapping_network", None)
    if not isinstance(mapping, torch.nn.Module):
        mapping = G.mapping
    return mapping.w_avg
