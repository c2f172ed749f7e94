"""The CUDA backend: one call of `gsplat.rasterization` for every image of a batch.

gsplat is imported lazily (it is an optional dependency, absent on CPU machines) and JIT-compiles
its CUDA kernels on first use. `probe` says whether that works on a device; `render.py` caches it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import EPS2D


def gsplat_version() -> str | None:
    """gsplat's version, or None if it cannot be imported."""
    try:
        import gsplat
    except Exception:  # ImportError, or anything its import chain raises
        return None
    return str(getattr(gsplat, "__version__", "?"))


def probe(device: torch.device) -> str | None:
    """Tries gsplat on `device` with a one-Gaussian render (this triggers the JIT compile).
    Returns None if it works, else a sentence saying what failed."""
    if device.type != "cuda":
        return f"gsplat needs CUDA tensors, got tensors on {device.type.upper()}"
    if not torch.cuda.is_available():
        return "gsplat needs CUDA, and torch.cuda.is_available() is False"
    try:
        import gsplat
    except Exception as exc:
        return (
            f"gsplat is not installed or does not import ({type(exc).__name__}: {exc}); "
            "install it with `pip install gsgan[cuda]` (gsplat==1.5.3)"
        )
    try:
        f = dict(device=device, dtype=torch.float32)
        viewmat = torch.eye(4, **f)[None]
        K = torch.tensor([[8.0, 0, 4], [0, 8, 4], [0, 0, 1]], **f)[None]
        render_gsplat(
            means=torch.tensor([[0.0, 0.0, 2.0]], **f),
            quats=torch.tensor([[1.0, 0, 0, 0]], **f),
            scales=torch.full((1, 3), 0.1, **f),
            opacities=torch.ones(1, **f),
            colors=torch.ones(1, 3, **f),
            viewmats=viewmat,
            Ks=K,
            width=8,
            height=8,
            backgrounds=torch.zeros(1, 3, **f),
            near_plane=0.01,
            far_plane=1e10,
        )
        torch.cuda.synchronize(device)
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        return (
            f"gsplat {gsplat_version()} failed to compile or run its CUDA kernels "
            f"({type(exc).__name__}: {first_line})"
        )
    return None


def render_gsplat(
    means: Tensor,  # [..., N, 3]
    quats: Tensor,  # [..., N, 4] (w, x, y, z)
    scales: Tensor,  # [..., N, 3] activated
    opacities: Tensor,  # [..., N] activated
    colors: Tensor,  # [..., N, 3] activated RGB (no SH evaluation)
    viewmats: Tensor,  # [..., C, 4, 4]
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    backgrounds: Tensor,  # [..., C, 3]
    near_plane: float,
    far_plane: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns rgb [..., C, H, W, 3], alpha [..., C, H, W, 1], expected depth [..., C, H, W, 1]."""
    from gsplat import rasterization

    render, alpha, _meta = rasterization(
        means=means.contiguous(),
        quats=quats.contiguous(),
        scales=scales.contiguous(),
        opacities=opacities.contiguous(),
        colors=colors.contiguous(),
        viewmats=viewmats.contiguous(),
        Ks=Ks.contiguous(),
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=EPS2D,
        sh_degree=None,
        packed=False,
        rasterize_mode="classic",
        render_mode="RGB+ED",
        backgrounds=backgrounds.contiguous(),
    )
    return render[..., :3], alpha, render[..., 3:4]
