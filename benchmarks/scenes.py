"""Scenes for speed measurements.

A random-weight generator puts all its Gaussians in one blob at the origin, each overlapping all
the others: the worst case for a tile rasterizer, and nothing like a trained model. `head_like`
builds Gaussians with the same hierarchy (counts, levels, parents) laid out as a trained head
would be: level-0 anchors spread over a head-sized ellipsoid, every child near its parent at
half its size, so the rasterizer sees a realistic number of Gaussians per tile.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gsgan_core.gaussians import Gaussians
from gsgan_core.models.config import GeneratorConfig
from gsgan_core.models.generator import hierarchy_indices


def head_like(config: GeneratorConfig, batch: int, device: torch.device, seed: int = 0) -> Gaussians:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    level_index, parent_index = hierarchy_indices(config)
    n = level_index.numel()
    means = torch.zeros(batch, n, 3)
    log_scales = torch.zeros(batch, n, 3)
    radii = torch.tensor([0.38, 0.48, 0.42])  # a head, in the FFHQ frame (units of the 2.7 orbit)
    base = math.log(0.6 * 1.0 / math.sqrt(config.num_points))
    for level in range(config.num_levels):
        at = (level_index == level).nonzero().squeeze(-1)
        if level == 0:
            directions = F.normalize(torch.randn(batch, at.numel(), 3, generator=generator), dim=-1)
            means[:, at] = directions * radii
        else:
            parents = parent_index[at]
            spread = math.exp(base - (level - 1) * math.log(2))  # about the parent's size
            means[:, at] = means[:, parents] + spread * torch.randn(batch, at.numel(), 3, generator=generator)
        log_scales[:, at] = base - level * math.log(2) + 0.3 * torch.randn(batch, at.numel(), 3, generator=generator)
    background = level_index == -1
    if background.any():
        directions = F.normalize(torch.randn(batch, int(background.sum()), 3, generator=generator), dim=-1)
        means[:, background] = 3.0 * directions
        log_scales[:, background] = math.log(0.12)
    return Gaussians(
        means=means.to(device),
        log_scales=log_scales.to(device),
        quats=F.normalize(torch.randn(batch, n, 4, generator=generator), dim=-1).to(device),
        opacity_logits=torch.randn(batch, n, generator=generator).to(device),
        sh_dc=torch.randn(batch, n, 3, generator=generator).to(device),
        level=level_index.to(device),
        parent=parent_index.to(device),
    )
