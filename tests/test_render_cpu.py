"""The compiled CPU rasterizer (gsgan_core/render/compiled.py) against the reference, and how
`render` picks it.

Parity: the same scenes through backend="compiled" and backend="reference", PSNR >= 40 dB on rgb
and on alpha (the bar gsplat meets against the reference). Depth is compared with a bound of its
own (see DEPTH_TOLERANCE).
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_generator

from gsgan_core.cameras import orbit_camera, to_rasterizer
from gsgan_core.errors import RenderBackendError
from gsgan_core.gaussians import SH_C0, Gaussians
from gsgan_core.models.generator import z_from_seeds
from gsgan_core.render import backend_report, render, resolve_backend

pytest.importorskip("numba", reason="the compiled rasterizer needs numba (a dependency of gsgan)")

PARITY_DB = 40.0
# Expected depth is sum(w_i z_i) / alpha. Where alpha >= 0.5 the division cannot amplify an error
# more than 2x; the weights agree to float32 rounding, except that a Gaussian whose alpha lands
# within rounding of the 1/255 cut-off, or a pixel whose transmittance lands within rounding of
# the 1e-4 stop, may be in one image and not the other: a weight of at most 1/255 (resp. 1e-4)
# moved between depths that differ by at most the scene's depth extent. So |depth difference|
# <= 2 * (1/255) * extent bounds every such pixel, and the typical pixel differs by float32
# rounding only (median <= 1e-5 relative).
DEPTH_TOLERANCE = 2.0 / 255.0  # times the scene's depth extent, where both alphas >= 0.5
DEPTH_MEDIAN_RELATIVE = 1e-5


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.double() - b.double()) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def random_scene(batch: tuple[int, ...], n: int, gen: torch.Generator, spread: float = 0.3,
                 log_scale_mean: float = math.log(0.02), log_scale_std: float = 0.8) -> Gaussians:
    rn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return Gaussians(
        means=rn(*batch, n, 3) * spread,
        log_scales=log_scale_mean + log_scale_std * rn(*batch, n, 3),
        quats=rn(*batch, n, 4),
        opacity_logits=2.0 * rn(*batch, n),
        sh_dc=rn(*batch, n, 3),
        level=torch.zeros(n, dtype=torch.long),
        parent=torch.full((n,), -1, dtype=torch.long),
    )


def cameras(batch: tuple[int, ...], C: int, width: int, height: int, gen: torch.Generator, radius: float = 2.7,
            fov: float = 18.0):
    """[*batch, C] orbit cameras around the origin (random yaw and pitch) for a width x height image."""
    yaw = (torch.rand(*batch, C, generator=gen) - 0.5) * 2 * math.pi
    pitch = (torch.rand(*batch, C, generator=gen) - 0.5) * 1.2
    cam2world, K_norm = orbit_camera(yaw, pitch, radius, (0.0, 0.0, 0.0), fov)
    return to_rasterizer(cam2world, K_norm, width, height)


def both(g, viewmats, Ks, width, height, **kwargs):
    fast = render(g, viewmats, Ks, width, height, backend="compiled", **kwargs)
    ref = render(g, viewmats, Ks, width, height, backend="reference", **kwargs)
    assert fast.backend == "compiled" and ref.backend == "reference"
    for name in ("rgb", "alpha", "depth"):
        a, b = getattr(fast, name), getattr(ref, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert torch.isfinite(a).all(), name
    return fast, ref


def check_parity(fast, ref, label: str) -> dict:
    p_rgb = psnr(fast.rgb.clamp(0, 1), ref.rgb.clamp(0, 1))
    p_alpha = psnr(fast.alpha, ref.alpha)
    covered = (fast.alpha >= 0.5) & (ref.alpha >= 0.5)
    stats = {"rgb_db": p_rgb, "alpha_db": p_alpha, "coverage": float(ref.alpha.mean())}
    if covered.any():
        ref_depth = ref.depth[covered]
        extent = float(ref_depth.max() - ref_depth.min()) + 1e-6
        diff = (fast.depth - ref.depth).abs()[covered]
        stats["depth_max_over_extent"] = float(diff.max()) / extent
        stats["depth_median_rel"] = float((diff / ref_depth.abs()).median())
        assert stats["depth_max_over_extent"] <= DEPTH_TOLERANCE, (label, stats)
        assert stats["depth_median_rel"] <= DEPTH_MEDIAN_RELATIVE, (label, stats)
    # The premultiplied depth sum(w_i z_i) (no division) agrees everywhere, covered or not.
    scale = float(ref.depth.abs().max()) + 1e-6
    assert float((fast.depth * fast.alpha - ref.depth * ref.alpha).abs().max()) <= DEPTH_TOLERANCE * scale, label
    print(f"{label}: " + " ".join(f"{k}={v:.3g}" for k, v in stats.items()))
    assert p_rgb >= PARITY_DB, (label, stats)
    assert p_alpha >= PARITY_DB, (label, stats)
    return stats


@pytest.mark.parametrize("seed", [0, 1])
def test_parity_random_scenes_batch_cameras_backgrounds(seed):
    gen = torch.Generator().manual_seed(seed)
    batch, C, W, H = (2,), 3, 72, 40  # not multiples of the 16-pixel tile
    g = random_scene(batch, 1500, gen)
    viewmats, Ks = cameras(batch, C, W, H, gen)
    bg = torch.rand(*batch, C, 3, generator=gen)
    fast, ref = both(g, viewmats, Ks, W, H, background=bg)
    assert fast.rgb.shape == (*batch, C, H, W, 3)
    stats = check_parity(fast, ref, f"random seed {seed}")
    assert stats["coverage"] > 0.1


def test_parity_two_batch_dims_and_unbatched():
    gen = torch.Generator().manual_seed(5)
    g = random_scene((2, 1), 600, gen)
    viewmats, Ks = cameras((2, 1), 2, 40, 40, gen)
    fast, ref = both(g, viewmats, Ks, 40, 40, background=(0.2, 0.4, 0.6))
    assert fast.rgb.shape == (2, 1, 2, 40, 40, 3)
    check_parity(fast, ref, "batch [2, 1]")
    single = random_scene((), 600, gen)
    viewmats, Ks = cameras((), 2, 40, 40, gen)
    fast, ref = both(single, viewmats, Ks, 40, 40)
    assert fast.rgb.shape == (2, 40, 40, 3)
    check_parity(fast, ref, "unbatched")


def test_parity_tiny_and_huge_gaussians():
    gen = torch.Generator().manual_seed(2)
    tiny = random_scene((1,), 800, gen, log_scale_mean=math.log(1e-4), log_scale_std=0.5)  # far below a pixel
    huge = random_scene((1,), 40, gen, log_scale_mean=math.log(0.6), log_scale_std=0.7)  # larger than the view
    needles = random_scene((1,), 300, gen, log_scale_mean=math.log(0.02), log_scale_std=2.0)  # very anisotropic
    g = Gaussians(**{
        name: torch.cat([getattr(x, name) for x in (tiny, huge, needles)], dim=1 if name not in ("level", "parent") else 0)
        for name in ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "level", "parent")
    })
    viewmats, Ks = cameras((1,), 3, 48, 48, gen)
    fast, ref = both(g, viewmats, Ks, 48, 48, background=(1.0, 1.0, 1.0))
    check_parity(fast, ref, "tiny+huge+needles")


def test_parity_near_and_far_plane_culling():
    gen = torch.Generator().manual_seed(3)
    # Gaussians spread through and around the camera: some behind it, some between it and the
    # near plane, some beyond the far plane.
    g = random_scene((1,), 1500, gen, spread=1.6, log_scale_mean=math.log(0.05))
    viewmats, Ks = cameras((1,), 2, 48, 32, gen, radius=1.5, fov=60.0)
    for near, far in ((0.01, 1e10), (1.2, 1e10), (0.3, 2.0)):
        fast, ref = both(g, viewmats, Ks, 48, 32, background=(0.1, 0.2, 0.3), near_plane=near, far_plane=far)
        check_parity(fast, ref, f"near {near} far {far}")
    everything_culled = render(g, viewmats, Ks, 48, 32, background=(0.1, 0.2, 0.3), near_plane=50.0, backend="compiled")
    assert (everything_culled.alpha == 0).all() and (everything_culled.depth == 0).all()
    assert torch.allclose(everything_culled.rgb, torch.tensor([0.1, 0.2, 0.3]).expand(1, 2, 32, 48, 3))


def test_parity_on_the_tiny_generator_output():
    G = random_generator("tiny", seed=1)
    with torch.no_grad():
        g = G(z_from_seeds([0, 1], G.config.z_dim), psi=0.7)
    gen = torch.Generator().manual_seed(0)
    viewmats, Ks = cameras((2,), 2, 64, 64, gen)
    with torch.no_grad():
        fast, ref = both(g, viewmats, Ks, 64, 64, background=(1.0, 1.0, 1.0))
    stats = check_parity(fast, ref, "tiny generator")
    assert stats["coverage"] > 0.01


def test_single_gaussian_closed_form():
    """One isotropic Gaussian in front of an identity camera: alpha at the centre pixel is the
    opacity times exp(-d^2 / (2 (s^2 + 0.3))) with s the projected sigma in pixels."""
    f, z, sigma_world, opacity = 40.0, 4.0, 0.05, 0.8
    g = Gaussians(
        means=torch.tensor([[0.0, 0.0, z]]), log_scales=torch.full((1, 3), math.log(sigma_world)),
        quats=torch.tensor([[1.0, 0, 0, 0]]), opacity_logits=torch.logit(torch.tensor([opacity])),
        sh_dc=((torch.tensor([[0.9, 0.5, 0.1]]) - 0.5) / SH_C0), level=torch.zeros(1, dtype=torch.long),
        parent=torch.full((1,), -1, dtype=torch.long),
    )
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[f, 0, 16.0], [0, f, 16.0], [0, 0, 1]]])
    out = render(g, viewmats, Ks, 32, 32, backend="compiled")
    var = (f * sigma_world / z) ** 2 + 0.3
    d2 = 0.5 ** 2 + 0.5 ** 2  # the mean sits on the corner of pixels (15, 15) and (16, 16)
    expected = opacity * math.exp(-0.5 * d2 / var)
    assert out.alpha[0, 15, 15, 0].item() == pytest.approx(expected, rel=1e-5)
    assert out.rgb[0, 15, 15].tolist() == pytest.approx([0.9 * expected, 0.5 * expected, 0.1 * expected], rel=1e-5)
    assert out.depth[0, 15, 15, 0].item() == pytest.approx(z, rel=1e-6)


def test_auto_uses_compiled_only_without_grad_mode():
    gen = torch.Generator().manual_seed(0)
    g = random_scene((1,), 200, gen)
    viewmats, Ks = cameras((1,), 1, 32, 32, gen)
    with torch.no_grad():
        assert render(g, viewmats, Ks, 32, 32).backend == "compiled"
    with torch.inference_mode():
        assert render(g, viewmats, Ks, 32, 32).backend == "compiled"
    # Grad mode on: the differentiable reference, whether or not anything requires grad yet.
    assert render(g, viewmats, Ks, 32, 32).backend == "reference"
    g.means.requires_grad_(True)
    out = render(g, viewmats, Ks, 32, 32)
    assert out.backend == "reference" and out.rgb.requires_grad
    # Forced: compiled even in grad mode, and its images carry no gradient.
    forced = render(g, viewmats, Ks, 32, 32, backend="compiled")
    assert forced.backend == "compiled" and not forced.rgb.requires_grad
    # float64 asks for more than the compiled float32 maths: auto keeps the reference.
    with torch.no_grad():
        double = render(g.to(torch.float64), viewmats, Ks, 32, 32)
    assert double.backend == "reference" and double.rgb.dtype == torch.float64


def test_resolve_backend_and_report_for_the_compiled_backend():
    assert resolve_backend("cpu", "auto", needs_grad=False) == "compiled"
    assert resolve_backend("cpu", "auto", needs_grad=True) == "reference"
    assert resolve_backend("cpu", "compiled") == "compiled"
    with torch.no_grad():
        assert resolve_backend("cpu") == "compiled"
        assert backend_report("cpu").startswith("compiled (Numba ")
    assert backend_report("cpu", needs_grad=False).startswith("compiled (Numba ")
    assert backend_report("cpu", needs_grad=True) == "reference (PyTorch, CPU)"


def test_missing_numba_falls_back_in_auto_and_raises_when_forced(monkeypatch):
    import sys
    import warnings

    render_module = sys.modules["gsgan_core.render.render"]
    monkeypatch.setattr(render_module, "_COMPILED_PROBE", ["numba is not installed (test)"])
    monkeypatch.setattr(render_module, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="numba is not installed"):
        assert resolve_backend("cpu", "auto", needs_grad=False) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend("cpu", "auto", needs_grad=False) == "reference"
    with pytest.raises(RenderBackendError, match='numba.*backend="reference"'):
        resolve_backend("cpu", "compiled")


def test_empty_scene_and_supersampling():
    gen = torch.Generator().manual_seed(4)
    empty = random_scene((1,), 0, gen)
    viewmats, Ks = cameras((1,), 2, 24, 24, gen)
    out = render(empty, viewmats, Ks, 24, 24, background=(0.5, 0.5, 0.5), backend="compiled")
    assert (out.alpha == 0).all() and torch.allclose(out.rgb, torch.full_like(out.rgb, 0.5))
    g = random_scene((1,), 400, gen)
    fast, ref = both(g, viewmats, Ks, 24, 24, supersample=2)
    check_parity(fast, ref, "supersample 2")
