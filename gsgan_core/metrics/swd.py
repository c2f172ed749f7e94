"""Sliced Wasserstein distance on Laplacian pyramids (Karras et al., Progressive GAN, 2018).

No downloaded weights: from each pyramid level of both image sets, random 7x7x3 patches are taken,
normalised per channel, and the Wasserstein-1 distance between the two patch clouds is averaged over
random 1-d projections. Lower is better; real-vs-real of the same size gives the noise floor.
Reported x1000, per level (finest first) and averaged, like the original.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PATCH = 7
PATCHES_PER_IMAGE = 128
PROJECTIONS = 512
REPEATS = 4


def _gaussian_kernel(channels: int, device, dtype) -> Tensor:
    f = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    k = f[:, None] * f[None, :]
    return (k / k.sum()).expand(channels, 1, 5, 5)


def laplacian_pyramid(images: Tensor, levels: int) -> list[Tensor]:  # [B, 3, R, R] -> finest first
    kernel = _gaussian_kernel(images.shape[1], images.device, images.dtype)
    pyramid, current = [], images
    for _ in range(levels - 1):
        low = F.conv2d(F.pad(current, (2, 2, 2, 2), mode="replicate"), kernel, groups=current.shape[1])[:, :, ::2, ::2]
        up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        pyramid.append(current - up)
        current = low
    pyramid.append(current)
    return pyramid


def _patches(level: Tensor, rng: torch.Generator) -> Tensor:  # [B, 3, H, W] -> [B * P, 3 * 7 * 7]
    B, C, H, W = level.shape
    n = PATCHES_PER_IMAGE
    # random numbers come from the CPU generator, so every device takes the same patches
    ys = torch.randint(0, H - PATCH + 1, (B, n), generator=rng).to(level.device)
    xs = torch.randint(0, W - PATCH + 1, (B, n), generator=rng).to(level.device)
    offsets = torch.arange(PATCH, device=level.device)
    rows = (ys[..., None] + offsets)[..., :, None].expand(B, n, PATCH, PATCH)  # [B, n, 7, 7]
    cols = (xs[..., None] + offsets)[..., None, :].expand(B, n, PATCH, PATCH)
    batch = torch.arange(B, device=level.device)[:, None, None, None].expand(B, n, PATCH, PATCH)
    patches = level.permute(0, 2, 3, 1)[batch, rows, cols]  # [B, n, 7, 7, C]
    return patches.permute(0, 1, 4, 2, 3).reshape(B * n, C * PATCH * PATCH)


def _normalise(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean/std over both sets together, so the distance compares shapes, not scales."""
    both = torch.cat([a, b]).view(-1, 3, PATCH * PATCH)
    mean = both.mean(dim=(0, 2), keepdim=True)
    std = both.std(dim=(0, 2), keepdim=True) + 1e-8
    norm = lambda x: ((x.view(-1, 3, PATCH * PATCH) - mean) / std).flatten(1)  # noqa: E731
    return norm(a), norm(b)


def _swd(a: Tensor, b: Tensor, rng: torch.Generator) -> float:  # [N, D], [N, D]
    total = 0.0
    for _ in range(REPEATS):
        directions = F.normalize(torch.randn(a.shape[1], PROJECTIONS, generator=rng), dim=0).to(a.device)
        pa = (a @ directions).sort(dim=0).values
        pb = (b @ directions).sort(dim=0).values
        total += float((pa - pb).abs().mean())
    return total / REPEATS


def sliced_wasserstein(
    images_a: Tensor,  # [N, 3, R, R] in [-1, 1]
    images_b: Tensor,  # [N, 3, R, R] in [-1, 1], same N and R
    seed: int = 0,
    device: torch.device | str = "cpu",  # where to compute: a GPU takes seconds for 5,000 images, a CPU minutes
) -> dict:  # {"levels": [per level, finest first], "mean": float, "resolutions": [...]}
    if images_a.shape != images_b.shape or images_a.dim() != 4 or images_a.shape[1] != 3:
        raise ValueError(f"SWD needs two image sets of one shape [N, 3, R, R]; got {tuple(images_a.shape)} "
                         f"and {tuple(images_b.shape)}")
    resolution = images_a.shape[-1]
    levels = max(1, resolution.bit_length() - 4)  # down to 16x16, like the original
    rng = torch.Generator().manual_seed(seed)
    pyr_a = laplacian_pyramid(images_a.to(device, torch.float32), levels)
    pyr_b = laplacian_pyramid(images_b.to(device, torch.float32), levels)
    per_level = []
    for la, lb in zip(pyr_a, pyr_b):
        a, b = _normalise(_patches(la, rng), _patches(lb, rng))
        per_level.append(_swd(a, b, rng) * 1000)
    return {"levels": per_level, "mean": sum(per_level) / len(per_level),
            "resolutions": [p.shape[-1] for p in pyr_a]}
