"""How much each hierarchy level shows in the image: render with it and without it.

A level can hold most of the Gaussians and still add nothing to the picture: its Gaussians have
shrunk below a pixel (the log-scale floor) or gone transparent, and nothing pulls them back, since
an invisible Gaussian gets no gradient. SWD does not show that; this number does, so training logs
it at every snapshot.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gsgan_core.gaussians import Gaussians
from gsgan_core.render.render import render


def level_contributions(
    gaussians: Gaussians,  # means [B, N, 3], ... with level [N]
    viewmats: Tensor,  # [B, C, 4, 4]
    Ks: Tensor,  # [B, C, 3, 3] in pixels
    width: int,
    height: int,
    backend: str = "auto",
) -> dict[int, float]:
    """{level: mean |image - image without that level|} over the head's pixels, RGB in [0, 1].

    Only the foreground is drawn (GSGAN's background Gaussians, level -1, would cover every pixel),
    on white. The head's pixels are those whose alpha is above 0.5 with every level drawn. 0 means
    the level is invisible; a level that carries the shape scores about the contrast between head
    and background.
    """
    gaussians = gaussians.foreground()
    full = render(gaussians, viewmats, Ks, width, height, background=(1.0, 1.0, 1.0), backend=backend)
    head = (full.alpha > 0.5).to(full.rgb.dtype)  # [B, C, H, W, 1]
    pixels = head.sum().clamp_min(1) * 3
    result = {}
    for level in gaussians.levels:
        without = render(gaussians.select(gaussians.level != level), viewmats, Ks, width, height,
                         background=(1.0, 1.0, 1.0), backend=backend)
        result[level] = float(((full.rgb - without.rgb).abs() * head).sum() / pixels)
    return result


def generator_level_contributions(
    G,  # either architecture's generator
    z: Tensor,  # [B, z_dim]
    labels: Tensor,  # [B, 25] one camera per scene (EG3D labels); the mapping sees it if pose-conditioned
    resolution: int,
    backend: str = "auto",
) -> dict[int, float]:
    """`level_contributions` of G's scenes for z, each seen from its camera in `labels`."""
    from gsgan_core.cameras import camera_forward, labels_to_cameras, to_rasterizer

    cam2world, K_norm = labels_to_cameras(labels[:, None])  # [B, 1, 4, 4], [B, 1, 3, 3]
    viewmats, Ks = to_rasterizer(cam2world, K_norm, resolution, resolution, G.config.camera_model)
    view_dirs = camera_forward(cam2world[:, 0]) if G.config.view_dependent_color else None
    with torch.no_grad():
        gaussians = G.synthesize(G.mapping(z, labels if G.config.c_dim else None), view_dirs)
        return level_contributions(gaussians, viewmats, Ks, resolution, resolution, backend)


def anchor_log_scales(G, z: Tensor, labels: Tensor | None = None) -> list[float]:  # z [B, z_dim], labels [B, 25]
    """Median over anchors of their largest log-scale, per anchor level (levels 0 .. L-2).

    An anchor level at the floor of -8 caps every level below it far under a pixel: the earliest
    sign of a collapsing hierarchy, before the levels' contributions reach 0.
    """
    with torch.no_grad():
        _, anchors = G.synthesize(G.mapping(z, labels if G.config.c_dim else None), return_anchors=True)
    return [float(a.log_scale.amax(dim=-1).median()) for a in anchors]
