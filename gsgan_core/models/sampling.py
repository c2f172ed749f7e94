"""Images from a generator, as training, its snapshots and gsgan-metrics see them.

    generate_images   z, cameras -> rendered images in [-1, 1] (+ level-0 anchors, for the regularisers)
    fake_images       seeds + camera labels -> images on white, in batches, without gradients
    random_labels     camera labels drawn from a dataset's

The real images they are compared with come from `gsgan_core.data.dataset.real_images`.

Either generator architecture works: each carries `config.camera_model`, `c_dim` and
`view_dependent_color`, and `mapping` / `synthesize(ws, view_dirs, return_anchors=True)`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gsgan_core.cameras import camera_forward, labels_to_cameras, to_rasterizer
from gsgan_core.models.generator import z_from_seeds
from gsgan_core.render import render

__all__ = ["fake_images", "generate_images", "random_labels", "z_from_seeds"]


def generate_images(
    G: nn.Module,
    z: Tensor,  # [B, z_dim]
    *,
    mapping_labels: Tensor | None,  # [B, 25] camera labels the mapping sees (pose-conditioned G only)
    render_labels: Tensor,  # [B, V, 25] cameras to render each scene from
    backgrounds: Tensor,  # [B, V, 3] colours in [0, 1]
    resolution: int,
    backend: str = "auto",
    update_w_avg: bool = False,
    supersample: int = 1,  # render at R * supersample and average down (render()'s box filter)
) -> tuple[Tensor, Tensor]:  # images [B*V, 3, R, R] in [-1, 1], level-0 anchor means [B, N0, 3]
    B, V = render_labels.shape[:2]
    cam2world, K_norm = labels_to_cameras(render_labels)  # [B, V, 4, 4], [B, V, 3, 3]
    viewmats, Ks = to_rasterizer(cam2world, K_norm, resolution, resolution, G.config.camera_model)
    ws = G.mapping(z, mapping_labels, update_w_avg=update_w_avg)  # [B, num_ws, w_dim]
    if G.config.view_dependent_color and V > 1:
        # The colour head sees one view direction per scene: synthesise once per view. Geometry
        # does not see the direction, so the V copies are the same scene.
        gaussians, anchors = G.synthesize(
            ws.repeat_interleave(V, dim=0), camera_forward(cam2world).flatten(0, 1), return_anchors=True
        )
        out = render(gaussians, viewmats.flatten(0, 1)[:, None], Ks.flatten(0, 1)[:, None], resolution, resolution,
                     background=backgrounds.flatten(0, 1)[:, None], backend=backend, supersample=supersample)
        anchor_means = anchors[0].mean[::V]
    else:
        view_dirs = camera_forward(cam2world[:, 0]) if G.config.view_dependent_color else None
        gaussians, anchors = G.synthesize(ws, view_dirs, return_anchors=True)
        out = render(gaussians, viewmats, Ks, resolution, resolution, background=backgrounds, backend=backend,
                     supersample=supersample)
        anchor_means = anchors[0].mean
    images = out.rgb.flatten(0, 1).permute(0, 3, 1, 2)  # [B*V, 3, R, R]
    return images * 2 - 1, anchor_means


def fake_images(
    G: nn.Module,
    labels: Tensor,  # [n, 25] one camera per image (the mapping sees it too if G is pose-conditioned)
    resolution: int,
    seed: int = 0,  # image i has latent z_from_seeds([seed + i])
    device: torch.device | str = "cpu",
    batch: int = 16,
    supersample: int = 1,
    backend: str = "auto",
) -> Tensor:  # [n, 3, R, R] in [-1, 1] on white, on the CPU
    out = []
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            c = labels[start : start + batch].to(device)
            z = z_from_seeds(range(seed + start, seed + start + len(c)), G.config.z_dim, device)
            images, _ = generate_images(G, z, mapping_labels=c if G.config.c_dim else None, render_labels=c[:, None],
                                        backgrounds=torch.ones(len(c), 1, 3, device=device), resolution=resolution,
                                        backend=backend, supersample=supersample)
            out.append(images.cpu())
    return torch.cat(out)


def random_labels(all_labels: Tensor, n: int, rng: torch.Generator) -> Tensor:  # [N, 25] -> [n, 25]
    return all_labels[torch.randint(len(all_labels), (n,), generator=rng)]
