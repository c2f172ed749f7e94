"""`render`: the one entry point that turns Gaussians and cameras into images.

Three backends compute the same images: gsplat's CUDA kernels ("gsplat"), a pure-PyTorch port of
the same maths ("reference", any device, differentiable, slow) and a compiled CPU rasterizer of the
same maths ("compiled", Numba, forward only: `compiled.py`). "auto" picks gsplat for CUDA tensors
when it imports and compiles, else the reference; on the CPU it picks the compiled rasterizer when
no gradient can be needed (grad mode off: `torch.no_grad()` or `torch.inference_mode()`), else the
reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import CameraError, ConfigError, RenderBackendError
from ..gaussians import Gaussians
from . import gsplat_backend
from .reference import render_reference

BACKENDS = ("auto", "gsplat", "reference", "compiled")
_FALLBACK_HINT = 'backend="reference" (pure PyTorch) still works'

# Per-process cache of the gsplat probe: device string -> None (works) or what failed.
_PROBE_CACHE: dict[str, str | None] = {}
_WARNED: set[str] = set()
# The compiled CPU rasterizer's import (numba), tried once: None (works) or what failed.
_COMPILED_PROBE: list[str | None] = []


@dataclass
class RenderOutput:
    rgb: Tensor  # [..., C, H, W, 3] colour, background included
    alpha: Tensor  # [..., C, H, W, 1] accumulated opacity (1 - final transmittance)
    depth: Tensor  # [..., C, H, W, 1] expected depth sum(w_i z_i) / alpha; 0 where alpha == 0
    backend: str  # "gsplat", "reference" or "compiled": the backend that produced it


def _gsplat_problem(device: torch.device) -> str | None:
    """None if gsplat works on `device`, else what failed (probed once per process and device)."""
    if device.type != "cuda":
        return gsplat_backend.probe(device)  # cheap, not cached
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = str(device)
    if key not in _PROBE_CACHE:
        _PROBE_CACHE[key] = gsplat_backend.probe(device)
    return _PROBE_CACHE[key]


def _compiled_problem() -> str | None:
    """None if the compiled CPU rasterizer imports (numba is there), else what failed."""
    if not _COMPILED_PROBE:
        try:
            from . import compiled  # noqa: F401
        except Exception as exc:  # ImportError, or anything numba's import raises
            _COMPILED_PROBE.append(
                f"numba is not installed or does not import ({type(exc).__name__}: {exc}); "
                "install it with `pip install numba`"
            )
        else:
            _COMPILED_PROBE.append(None)
    return _COMPILED_PROBE[0]


def resolve_backend(device: torch.device | str, requested: str = "auto", needs_grad: bool | None = None) -> str:
    """The backend `render` will use for tensors on `device`: "gsplat", "reference" or "compiled".

    needs_grad: whether the images may need gradients; None means "if grad mode is on"
    (torch.is_grad_enabled()). "auto" on a non-CUDA device gives "compiled" when they cannot, else
    "reference". Raises RenderBackendError if "gsplat" or "compiled" was asked for and cannot work;
    in "auto" mode such a failure warns once and falls back to the reference.
    """
    if requested not in BACKENDS:
        raise ConfigError(f"unknown render backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    if requested == "reference":
        return "reference"
    if requested == "compiled" or (requested == "auto" and device.type != "cuda"):
        if requested == "auto" and (torch.is_grad_enabled() if needs_grad is None else needs_grad):
            return "reference"  # the differentiable one; nothing to warn about
        problem = _compiled_problem()
        if problem is None:
            return "compiled"
        message = f"render backend compiled is unavailable: {problem}; {_FALLBACK_HINT}"
        if requested == "compiled":
            raise RenderBackendError(message)
        if "compiled" not in _WARNED:
            _WARNED.add("compiled")
            warnings.warn(message + " (falling back to it now)", RuntimeWarning, stacklevel=3)
        return "reference"
    problem = _gsplat_problem(device)
    if problem is None:
        return "gsplat"
    message = f"render backend gsplat is unavailable: {problem}; {_FALLBACK_HINT}"
    if requested == "gsplat":
        raise RenderBackendError(message)
    if str(device) not in _WARNED:
        _WARNED.add(str(device))
        warnings.warn(message + " (falling back to it now)", RuntimeWarning, stacklevel=3)
    return "reference"


def backend_report(device: torch.device | str, needs_grad: bool | None = None) -> str:
    """One line for a GUI or CLI: the backend "auto" uses on `device`, e.g. "gsplat 1.5.3 (CUDA,
    NVIDIA H100)", "compiled (Numba 0.68.1, CPU, 2 threads)" or "reference (PyTorch, CPU)".
    needs_grad as for `resolve_backend` (None: grad mode decides; a viewer passes False)."""
    device = torch.device(device)
    if device.type != "cuda":
        if resolve_backend(device, "auto", needs_grad) == "compiled":
            from . import compiled

            return f"compiled (Numba {compiled.numba_version()}, {device.type.upper()}, {compiled.num_threads()} threads)"
        return f"reference (PyTorch, {device.type.upper()})"
    problem = _gsplat_problem(device)
    if problem is None:
        return f"gsplat {gsplat_backend.gsplat_version()} (CUDA, {torch.cuda.get_device_name(device)})"
    return f"reference (PyTorch, CUDA; gsplat unavailable: {problem})"


def _backgrounds(background, batch_shape: torch.Size, C: int, like: Tensor) -> Tensor:
    """[..., C, 3] background colours from None (black), 3 floats, [3] or [..., C, 3]."""
    if background is None:
        bg = torch.zeros(3, device=like.device, dtype=like.dtype)
    else:
        bg = torch.as_tensor(background, device=like.device, dtype=like.dtype)
    shape = (*batch_shape, C, 3)
    try:
        return torch.broadcast_to(bg, shape)
    except RuntimeError:
        raise CameraError(
            f"background must be [3] or [..., C, 3] = {list(shape)}, got {list(bg.shape)}"
        ) from None


def render(
    gaussians: Gaussians,  # means [..., N, 3], log_scales [..., N, 3], quats [..., N, 4], ...
    viewmats: Tensor,  # [..., C, 4, 4] world-to-camera = inverse(cam2world), OpenCV axes
    Ks: Tensor,  # [..., C, 3, 3] intrinsics in pixels
    width: int,
    height: int,
    background: Tensor | Sequence[float] | None = None,  # [3] or [..., C, 3]; None = black
    backend: str = "auto",  # "auto" | "gsplat" | "reference" | "compiled"
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    supersample: int = 1,  # render at this many times width and height, then average each s x s block
) -> RenderOutput:
    """Renders every scene of the batch from its cameras, in one go.

    The batch dims `...` of the Gaussians and of viewmats/Ks must be equal (e.g. Gaussians [B, N]
    with cameras [B, C]); unbatched Gaussians [N] take cameras [C]. Returns rgb [..., C, H, W, 3],
    alpha [..., C, H, W, 1] and expected depth [..., C, H, W, 1] (gsplat's "RGB+ED").

    "auto" on the CPU renders float32/float16 Gaussians with the compiled rasterizer when grad mode
    is off (inside `torch.no_grad()` / `torch.inference_mode()`), else with the differentiable
    reference; backend="compiled" forces the compiled one (float32 maths, outputs in the Gaussians'
    dtype and device, never carrying gradients).

    supersample > 1 filters each pixel with a box, like a supersampled ray tracer (the heads
    dataset's 2x2), instead of only with the rasterizer's screen-space dilation (eps2d = 0.3 px^2,
    a Gaussian of sigma 0.55 px), which is softer than any edge a box-filtered image has.
    """
    if supersample != 1:
        return _render_supersampled(gaussians, viewmats, Ks, width, height, background, backend,
                                    near_plane, far_plane, supersample)
    batch = gaussians.batch_shape
    _check_cameras(viewmats, Ks, batch)
    C = viewmats.shape[-3]
    means = gaussians.means
    viewmats = viewmats.to(device=means.device, dtype=means.dtype)
    Ks = Ks.to(device=means.device, dtype=means.dtype)
    bgs = _backgrounds(background, batch, C, means)
    used = resolve_backend(means.device, backend)
    if used == "compiled" and backend == "auto" and means.dtype == torch.float64:
        used = "reference"  # the compiled rasterizer computes in float32; float64 asks for more
    out_shape = (*batch, C, int(height), int(width))
    if used == "compiled":
        return _render_compiled(gaussians, viewmats, Ks, bgs, out_shape, near_plane, far_plane)
    inputs = dict(
        means=means, quats=gaussians.unit_quats, scales=gaussians.scales, opacities=gaussians.opacities,
        colors=gaussians.rgbs, viewmats=viewmats, Ks=Ks, width=int(width), height=int(height),
        backgrounds=bgs, near_plane=float(near_plane), far_plane=float(far_plane),
    )
    if used == "gsplat":
        rgb, alpha, depth = gsplat_backend.render_gsplat(**inputs)
        return RenderOutput(rgb, alpha, depth, "gsplat")
    # The reference works on exactly one batch dim: flatten `...` into B (B = 1 when unbatched).
    flat = {k: (v.reshape(-1, *v.shape[len(batch):]) if isinstance(v, Tensor) else v) for k, v in inputs.items()}
    rgb, alpha, depth = render_reference(**flat)
    return RenderOutput(
        rgb.reshape(*out_shape, 3), alpha.reshape(*out_shape, 1), depth.reshape(*out_shape, 1), "reference"
    )


def _check_cameras(viewmats: Tensor, Ks: Tensor, batch: torch.Size) -> None:
    if viewmats.shape[-2:] != (4, 4) or Ks.shape[-2:] != (3, 3):
        raise CameraError(
            f"viewmats must be [..., C, 4, 4] and Ks [..., C, 3, 3], got {list(viewmats.shape)} "
            f"and {list(Ks.shape)}"
        )
    if viewmats.shape[:-2] != Ks.shape[:-2] or viewmats.shape[:-3] != batch:
        raise CameraError(
            f"camera batch dims must equal the Gaussians' {list(batch)} (+ [C]): viewmats "
            f"{list(viewmats.shape)}, Ks {list(Ks.shape)}"
        )


def _render_supersampled(gaussians, viewmats, Ks, width, height, background, backend, near_plane, far_plane,
                         supersample) -> RenderOutput:
    if supersample < 1 or int(supersample) != supersample:
        raise ConfigError(f"supersample must be a whole number >= 1, got {supersample!r}")
    s = int(supersample)
    # Pixel k spans [k, k+1) in gsplat's pixel coordinates, so scaling fx, fy, cx, cy by s maps
    # it onto the s x s fine pixels that average back into it.
    scale = Ks.new_tensor([[s, s, s], [s, s, s], [1, 1, 1]])
    fine = render(gaussians, viewmats, Ks * scale, width * s, height * s, background, backend, near_plane, far_plane)

    def pool(x: Tensor) -> Tensor:  # [..., H*s, W*s, K] -> [..., H, W, K]
        *lead, H, W, K = x.shape
        return x.reshape(*lead, H // s, s, W // s, s, K).mean(dim=(-4, -2))

    # Depth is averaged as is: expected depth of the block, weighting its pixels equally.
    return RenderOutput(pool(fine.rgb), pool(fine.alpha), pool(fine.depth), fine.backend)


def _render_compiled(gaussians: Gaussians, viewmats: Tensor, Ks: Tensor, bgs: Tensor, out_shape: tuple,
                     near_plane: float, far_plane: float) -> RenderOutput:
    from .compiled import render_compiled

    batch = gaussians.batch_shape

    def flat(t: Tensor) -> Tensor:  # `...` -> one batch dim B (B = 1 when unbatched)
        return t.reshape(batch.numel(), *t.shape[len(batch):])

    rgb, alpha, depth = render_compiled(
        flat(gaussians.means), flat(gaussians.log_scales), flat(gaussians.quats), flat(gaussians.opacity_logits),
        flat(gaussians.sh_dc), flat(viewmats), flat(Ks), out_shape[-1], out_shape[-2], flat(bgs),
        float(near_plane), float(far_plane),
    )
    like = dict(device=gaussians.means.device, dtype=gaussians.means.dtype)
    return RenderOutput(
        rgb.reshape(*out_shape, 3).to(**like), alpha.reshape(*out_shape, 1).to(**like),
        depth.reshape(*out_shape, 1).to(**like), "compiled",
    )
