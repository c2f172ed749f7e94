"""Sliced Wasserstein distance on Laplacian pyramids (Karras et al., Progressive GAN, 2018).

No downloaded weights: both image sets are taken as 8-bit images, each is split into a Laplacian
pyramid (5x5 binomial filter, zero-insertion expand, mirrored borders), random 7x7x3 patches are taken
from each level, each set's patches are normalised per colour channel by that set's own mean and
standard deviation, and the Wasserstein-1 distance between the two patch clouds is averaged over random
1-d projections. Lower is better; real-vs-real of the same size gives the noise floor. Reported x1000,
per level (finest first) and averaged. All of this is the original's (Progressive GAN's
`sliced_wasserstein.py` and its metric), except that it averages 4 x 512 projections, not 4 x 128:
the same expectation with less noise.

normalise="joint" instead uses one mean and standard deviation for both sets. That keeps a difference
in contrast (a blurred set has a weaker fine band), which the original's per-set normalisation removes,
so it is the stricter of the two.
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


def _filter(images: Tensor, kernel: Tensor) -> Tensor:  # mirrored borders (scipy's "mirror" = torch's "reflect")
    return F.conv2d(F.pad(images, (2, 2, 2, 2), mode="reflect"), kernel, groups=images.shape[1])


def laplacian_pyramid(images: Tensor, levels: int) -> list[Tensor]:  # [B, 3, R, R] -> finest first
    kernel = _gaussian_kernel(images.shape[1], images.device, images.dtype)
    pyramid, current = [], images
    for _ in range(levels - 1):
        low = _filter(current, kernel)[:, :, ::2, ::2]
        up = torch.zeros_like(current)
        up[:, :, ::2, ::2] = low  # zero-insertion, then the same filter x4 (the 4 restores the mean)
        up = _filter(up, 4 * kernel)
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


def _normalise(a: Tensor, b: Tensor, normalise: str) -> tuple[Tensor, Tensor]:  # [N, 3 * 49] each
    """Per colour channel to mean 0 and std 1: each set by its own statistics ("per-set", the original's),
    or both by those of the two together ("joint")."""
    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.view(-1, 3, PATCH * PATCH)
        return x.mean(dim=(0, 2), keepdim=True), x.std(dim=(0, 2), keepdim=True) + 1e-8

    def norm(x: Tensor, mean_std: tuple[Tensor, Tensor]) -> Tensor:
        return ((x.view(-1, 3, PATCH * PATCH) - mean_std[0]) / mean_std[1]).flatten(1)

    if normalise == "per-set":
        return norm(a, stats(a)), norm(b, stats(b))
    both = stats(torch.cat([a, b]))
    return norm(a, both), norm(b, both)


def as_8bit(images: Tensor) -> Tensor:  # [-1, 1] -> the 0..255 grid, as float: the original measures uint8 images
    return ((images + 1) * 127.5).round().clamp(0, 255)


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
    normalise: str = "per-set",  # "per-set" (the original's) or "joint" (stricter: keeps contrast differences)
) -> dict:  # {"levels": [per level, finest first], "mean": float, "resolutions": [...]}
    if normalise not in ("per-set", "joint"):
        raise ValueError(f'SWD normalise must be "per-set" or "joint"; got {normalise!r}')
    if images_a.shape != images_b.shape or images_a.dim() != 4 or images_a.shape[1] != 3:
        raise ValueError(f"SWD needs two image sets of one shape [N, 3, R, R]; got {tuple(images_a.shape)} "
                         f"and {tuple(images_b.shape)}")
    resolution = images_a.shape[-1]
    levels = max(1, resolution.bit_length() - 4)  # down to 16x16, like the original
    rng = torch.Generator().manual_seed(seed)
    pyr_a = laplacian_pyramid(as_8bit(images_a.to(device, torch.float32)), levels)
    pyr_b = laplacian_pyramid(as_8bit(images_b.to(device, torch.float32)), levels)
    per_level = []
    for la, lb in zip(pyr_a, pyr_b):
        a, b = _normalise(_patches(la, rng), _patches(lb, rng), normalise)
        per_level.append(_swd(a, b, rng) * 1000)
    return {"levels": per_level, "mean": sum(per_level) / len(per_level),
            "resolutions": [p.shape[-1] for p in pyr_a]}
