"""A pure-PyTorch rasterizer with the same maths as gsplat 1.5.3's classic 3DGS path.

It exists so that everything renders (and trains) without CUDA, and so that gsplat's images can be
checked against something readable. Read it top to bottom:

1. `project`: world -> camera -> pixels (EWA splatting). Every Gaussian becomes, per camera, a 2D
   mean, an inverse 2D covariance ("conic"), a depth and a per-axis pixel radius; Gaussians that
   gsplat would cull (near/far, degenerate, too transparent, off screen) are marked invisible.
2. `tile_ranges`: the 16x16-pixel tiles each Gaussian's bounding rectangle touches. Like gsplat, a
   Gaussian is evaluated at *every* pixel of every tile it touches and nowhere else.
3. `rasterize`: per image and per tile, the Gaussians of that tile sorted front to back are alpha
   composited with gsplat's rules (alpha cap 0.999, skip alpha < 1/255 and negative exponents, stop
   before the Gaussian that would take the transmittance to <= 1e-4), then the background is added.

Everything is ordinary torch ops, so autograd gives gradients; the integer/boolean decisions
(culling, tiles, skips) carry no gradient, as in gsplat. Memory is bounded by working one tile
(256 pixels x the Gaussians touching it) at a time.

The constants and rules come from gsplat 1.5.3's CUDA sources: ProjectionEWA3DGSFused.cu and
include/Utils.cuh (projection), IntersectTile.cu (tiles), RasterizeToPixels3DGSFwd.cu (compositing).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..gaussians import quat_to_rotmat

TILE_SIZE = 16  # pixels per tile side
EPS2D = 0.3  # added to the diagonal of every 2D covariance (low-pass filter)
FOV_MARGIN = 0.3  # the Jacobian clamps x/z, y/z to the field of view widened by 30 %
ALPHA_THRESHOLD = 1.0 / 255.0  # contributions below this are skipped (and such Gaussians culled)
MAX_ALPHA = 0.999  # alpha of one Gaussian at one pixel is capped here
TRANSMITTANCE_STOP = 1e-4  # a pixel stops before the Gaussian that takes T to <= this
MAX_EXTEND = 3.33  # bounding box half-size in standard deviations, at most


# ---------------------------------------------------------------------------------------- 1. projection
def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariances R S S R^T.  quats [..., 4] (w, x, y, z; normalised here), scales [..., 3]
    -> [..., 3, 3]."""
    rot = quat_to_rotmat(quats)
    m = rot * scales[..., None, :]  # R S (scales the columns)
    return m @ m.transpose(-1, -2)


def project(
    means: Tensor,  # [B, N, 3] world positions
    covars: Tensor,  # [B, N, 3, 3] world covariances
    opacities: Tensor,  # [B, N] in [0, 1]
    viewmats: Tensor,  # [B, C, 4, 4] world-to-camera, OpenCV axes (x right, y down, z forward)
    Ks: Tensor,  # [B, C, 3, 3] intrinsics in pixels
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float = EPS2D,
) -> dict[str, Tensor]:
    """EWA projection of every Gaussian into every camera. Returns tensors of shape [B, C, N, ...]:
    means2d [.., 2], conics [.., 3] (a, b, c of the inverse covariance [[a, b], [b, c]]), depths,
    radii [.., 2] (int64, per axis), visible (bool)."""
    R = viewmats[..., :3, :3]  # [B, C, 3, 3]
    t = viewmats[..., :3, 3]  # [B, C, 3]
    means_c = torch.einsum("bcij,bnj->bcni", R, means) + t[:, :, None, :]  # [B, C, N, 3]
    covars_c = torch.einsum("bcij,bnjk,bclk->bcnil", R, covars, R)  # R Sigma R^T, [B, C, N, 3, 3]
    x, y, z = means_c.unbind(-1)

    visible = (z >= near_plane) & (z <= far_plane)
    z = torch.where(visible, z, torch.ones_like(z))  # culled ones get a harmless depth (no NaN grads)

    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]  # [B, C, 1]
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]

    # Perspective Jacobian at the mean; x/z and y/z are clamped to the FOV (plus a margin) so that
    # Gaussians far outside the view do not blow up (gsplat's persp_proj).
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + FOV_MARGIN * tan_fovx
    lim_x_neg = cx / fx + FOV_MARGIN * tan_fovx
    lim_y_pos = (height - cy) / fy + FOV_MARGIN * tan_fovy
    lim_y_neg = cy / fy + FOV_MARGIN * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zeros = torch.zeros_like(z)
    J = torch.stack(
        [fx * rz, zeros, -fx * tx * rz * rz, zeros, fy * rz, -fy * ty * rz * rz], dim=-1
    ).unflatten(-1, (2, 3))  # [B, C, N, 2, 3]
    cov2d = J @ covars_c @ J.transpose(-1, -2)  # [B, C, N, 2, 2]

    # Low-pass dilation, then cull what is not positive definite.
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    visible = visible & (det > 0)
    det = torch.where(visible, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)

    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    # Opacity-aware, per-axis bounding box (no gradient): a Gaussian is drawn out to where its alpha
    # would fall below 1/255, at most 3.33 standard deviations, per axis.
    with torch.no_grad():
        opac = opacities[:, None, :].expand_as(z)
        visible = visible & (opac >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(MAX_EXTEND)
        radius_x = torch.ceil(extend * a.clamp_min(0).sqrt())
        radius_y = torch.ceil(extend * c.clamp_min(0).sqrt())
        visible = visible & ((radius_x > 0) | (radius_y > 0))  # radius_clip = 0

        # Off-screen culling: the box lies entirely outside the image.
        mx, my = means2d[..., 0], means2d[..., 1]
        visible = visible & (mx + radius_x > 0) & (mx - radius_x < width)
        visible = visible & (my + radius_y > 0) & (my - radius_y < height)
        radii = torch.stack([radius_x, radius_y], dim=-1).long() * visible[..., None]

    return {"means2d": means2d, "conics": conics, "depths": z, "radii": radii, "visible": visible}


# ---------------------------------------------------------------------------------------- 2. tiles
def tile_ranges(means2d: Tensor, radii: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Tiles touched by each Gaussian's bounding box, as half-open ranges [lo, hi) of tile indices.
    means2d [..., 2], radii [..., 2] -> lo, hi [..., 2] int64 (x, y), clamped to the tile grid."""
    tiles = torch.tensor(
        [math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)], device=means2d.device
    )
    with torch.no_grad():
        centre = means2d.detach() / TILE_SIZE
        half = radii.to(means2d.dtype) / TILE_SIZE
        lo = torch.floor(centre - half).long().clamp(min=0).minimum(tiles)
        hi = torch.ceil(centre + half).long().clamp(min=0).minimum(tiles)
    return lo, hi


# ---------------------------------------------------------------------------------------- 3. compositing
def composite_tile(
    pixels: Tensor,  # [P, 2] pixel centres (x + 0.5, y + 0.5)
    means2d: Tensor,  # [G, 2] the tile's Gaussians, sorted front to back
    conics: Tensor,  # [G, 3]
    opacities: Tensor,  # [G]
    features: Tensor,  # [G, D] what to composite (colour and depth)
) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing at P pixels. Returns features [P, D] (no background) and
    the final transmittance T [P]."""
    if means2d.shape[0] == 0:  # nothing touches this tile
        return features.new_zeros(pixels.shape[0], features.shape[-1]), pixels.new_ones(pixels.shape[0])
    d = means2d[None, :, :] - pixels[:, None, :]  # [P, G, 2]
    dx, dy = d[..., 0], d[..., 1]
    sigma = 0.5 * (conics[:, 0] * dx * dx + conics[:, 2] * dy * dy) + conics[:, 1] * dx * dy
    alpha = (opacities * torch.exp(-sigma)).clamp_max(MAX_ALPHA)  # [P, G]
    used = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))

    # Stop rule: a pixel is done at the first Gaussian whose contribution would take T to <= 1e-4,
    # and that Gaussian is not drawn. T only decreases, so "T after me > 1e-4" picks exactly the
    # Gaussians before the stop.
    with torch.no_grad():
        used = used & (torch.cumprod(1.0 - alpha, dim=-1) > TRANSMITTANCE_STOP)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))

    T_after = torch.cumprod(1.0 - alpha, dim=-1)  # [P, G] transmittance after each Gaussian
    T_before = torch.cat([torch.ones_like(T_after[:, :1]), T_after[:, :-1]], dim=-1)
    weights = alpha * T_before  # [P, G]
    return weights @ features, T_after[:, -1]


def rasterize(
    means2d: Tensor,  # [I, N, 2]  (I = number of images)
    conics: Tensor,  # [I, N, 3]
    depths: Tensor,  # [I, N]
    radii: Tensor,  # [I, N, 2] int, 0 = culled
    opacities: Tensor,  # [I, N]
    features: Tensor,  # [I, N, D]
    backgrounds: Tensor,  # [I, D]
    width: int,
    height: int,
) -> tuple[Tensor, Tensor]:
    """Composites every image tile by tile. Returns features [I, H, W, D] (background added as
    T * bg) and alphas [I, H, W, 1] (= 1 - T)."""
    device, dtype = means2d.device, means2d.dtype
    lo, hi = tile_ranges(means2d, radii, width, height)  # [I, N, 2]
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    out_features, out_alphas = [], []
    for i in range(means2d.shape[0]):
        # This image's drawable Gaussians, front to back (stable: equal depths keep input order,
        # like gsplat's radix sort).
        ids = (radii[i] > 0).all(-1).nonzero().squeeze(-1)
        ids = ids[torch.sort(depths[i, ids].detach(), stable=True).indices]
        lo_i, hi_i = lo[i, ids], hi[i, ids]  # [n, 2]
        rows_f, rows_a = [], []
        for ty in range(tiles_y):
            y0, y1 = ty * TILE_SIZE, min((ty + 1) * TILE_SIZE, height)
            in_row = (lo_i[:, 1] <= ty) & (ty < hi_i[:, 1])
            row_f, row_a = [], []
            for tx in range(tiles_x):
                x0, x1 = tx * TILE_SIZE, min((tx + 1) * TILE_SIZE, width)
                g = ids[in_row & (lo_i[:, 0] <= tx) & (tx < hi_i[:, 0])]  # sorted front to back
                ys, xs = torch.meshgrid(
                    torch.arange(y0, y1, device=device, dtype=dtype),
                    torch.arange(x0, x1, device=device, dtype=dtype),
                    indexing="ij",
                )
                pixels = torch.stack([xs, ys], dim=-1).reshape(-1, 2) + 0.5
                feats, T = composite_tile(
                    pixels, means2d[i, g], conics[i, g], opacities[i, g], features[i, g]
                )
                feats = feats + T[:, None] * backgrounds[i]
                row_f.append(feats.reshape(y1 - y0, x1 - x0, -1))
                row_a.append((1.0 - T).reshape(y1 - y0, x1 - x0, 1))
            rows_f.append(torch.cat(row_f, dim=1))
            rows_a.append(torch.cat(row_a, dim=1))
        out_features.append(torch.cat(rows_f, dim=0))
        out_alphas.append(torch.cat(rows_a, dim=0))
    return torch.stack(out_features), torch.stack(out_alphas)


# ---------------------------------------------------------------------------------------- entry point
def render_reference(
    means: Tensor,  # [B, N, 3]
    quats: Tensor,  # [B, N, 4] (w, x, y, z)
    scales: Tensor,  # [B, N, 3] activated (positive)
    opacities: Tensor,  # [B, N] activated, in [0, 1]
    colors: Tensor,  # [B, N, 3] activated RGB
    viewmats: Tensor,  # [B, C, 4, 4]
    Ks: Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    backgrounds: Tensor,  # [B, C, 3]
    near_plane: float,
    far_plane: float,
    eps2d: float = EPS2D,
) -> tuple[Tensor, Tensor, Tensor]:
    """Renders B scenes from C cameras each. Returns rgb [B, C, H, W, 3], alpha [B, C, H, W, 1] and
    expected depth [B, C, H, W, 1] (sum w_i z_i / alpha; 0 where nothing was drawn), as gsplat's
    render_mode="RGB+ED"."""
    B, C = viewmats.shape[:2]
    N = means.shape[1]
    proj = project(
        means, quat_scale_to_covar(quats, scales), opacities, viewmats, Ks,
        width, height, near_plane, far_plane, eps2d,
    )
    # Flatten (scene, camera) into images; composite colour and depth together.
    features = torch.cat(
        [colors[:, None].expand(B, C, N, 3), proj["depths"][..., None]], dim=-1
    ).reshape(B * C, N, 4)
    bg = torch.cat([backgrounds, torch.zeros_like(backgrounds[..., :1])], dim=-1).reshape(B * C, 4)
    feats, alphas = rasterize(
        proj["means2d"].reshape(B * C, N, 2),
        proj["conics"].reshape(B * C, N, 3),
        proj["depths"].reshape(B * C, N),
        proj["radii"].reshape(B * C, N, 2),
        opacities[:, None].expand(B, C, N).reshape(B * C, N),
        features,
        bg,
        width,
        height,
    )
    feats = feats.reshape(B, C, height, width, 4)
    alphas = alphas.reshape(B, C, height, width, 1)
    depth = feats[..., 3:] / alphas.clamp_min(1e-10)
    return feats[..., :3], alphas, depth
