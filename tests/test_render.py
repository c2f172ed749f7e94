"""Tests of gsgan_core.render: the pure-PyTorch reference on CPU, and gsplat parity on CUDA."""

from __future__ import annotations

import math

import pytest
import torch

from gsgan_core.errors import ConfigError, RenderBackendError
from gsgan_core.gaussians import SH_C0, Gaussians
from gsgan_core.render import RenderOutput, backend_report, render, resolve_backend

W = H = 32
FOCAL = 40.0


def make_gaussians(means, scales, opacities, rgbs, quats=None) -> Gaussians:
    """Gaussians from *activated* values (any batch dims)."""
    means = torch.as_tensor(means, dtype=torch.float32)
    scales = torch.as_tensor(scales, dtype=torch.float32).expand(means.shape)
    opacities = torch.as_tensor(opacities, dtype=torch.float32).expand(means.shape[:-1])
    rgbs = torch.as_tensor(rgbs, dtype=torch.float32).expand(means.shape)
    if quats is None:
        quats = torch.tensor([1.0, 0, 0, 0]).expand(*means.shape[:-1], 4)
    n = means.shape[-2]
    return Gaussians(
        means=means.clone(),
        log_scales=scales.log().clone(),
        quats=torch.as_tensor(quats, dtype=torch.float32).clone(),
        opacity_logits=torch.logit(opacities.double()).float().clone(),
        sh_dc=((rgbs - 0.5) / SH_C0).clone(),
        level=torch.zeros(n, dtype=torch.long),
        parent=torch.full((n,), -1, dtype=torch.long),
    )


F32_ULPS = 128  # float32 sums taken in other orders (batched vs per-scene kernels, CPU builds, thread counts)


def assert_close_f32(actual, expected, ulps: int = F32_ULPS):
    """Equal up to rounding: within `ulps` float32 units in the last place of the tensor's largest magnitude.

    A float32 sum of many terms taken in another order differs by some ulps of the sum, so the tolerance
    scales with the values (a depth of 3.5 is 28 times more ulps than a colour of 0.125); a fixed 1e-5 is
    about 40 ulps at depth 3.5, less than a different CPU's reduction order gives. A wrong result (a
    scene rendered through another camera) is off by far more than 128 ulps.
    """
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    tolerance = ulps * torch.finfo(torch.float32).eps * max(scale, torch.finfo(torch.float32).tiny)
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance)


def test_float32_tolerance_fits_sums_in_another_order():
    # The reported case: depth about 3.5, 2.1e-5 apart after the batched and per-scene kernels summed in
    # other orders (torch 2.13.0 CPU wheel). The old fixed tolerance (1e-5 + 1.3e-6 relative) refused it.
    depth = torch.full((4, 4), 3.5052)
    reordered = depth.clone()
    reordered[1, 2] += 2.1e-5
    with pytest.raises(AssertionError):
        torch.testing.assert_close(reordered, depth)
    assert_close_f32(reordered, depth)
    # what reordering really does: many float32 sums of the same terms, forward and backward
    torch.manual_seed(0)
    terms = torch.rand(1000, 64) * 3.5
    forward, backward = torch.zeros(1000), torch.zeros(1000)
    for k in range(64):  # each addition rounds to float32
        forward, backward = forward + terms[:, k], backward + terms[:, 63 - k]
    assert not torch.equal(forward, backward)
    assert_close_f32(forward, backward)
    # and a real error is still caught, at either magnitude
    for values in (depth, torch.full((4, 4), 0.125)):
        wrong = values.clone()
        wrong[0, 0] *= 1.001
        with pytest.raises(AssertionError):
            assert_close_f32(wrong, values)


def camera(C: int = 1, focal: float = FOCAL, w: int = W, h: int = H):
    """Identity world-to-camera (looking down +z, OpenCV axes) and a centred pinhole, [C, ...]."""
    viewmats = torch.eye(4).expand(C, 4, 4).clone()
    Ks = torch.tensor([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]]).expand(C, 3, 3).clone()
    return viewmats, Ks


def test_single_isotropic_gaussian_matches_closed_form():
    z, sigma, opacity, colour, bg = 3.0, 0.15, 0.8, [0.2, 0.6, 1.0], [0.1, 0.2, 0.3]
    g = make_gaussians([[0.0, 0.0, z]], sigma, opacity, colour)
    viewmats, Ks = camera()
    out = render(g, viewmats, Ks, W, H, background=bg, backend="reference")
    assert isinstance(out, RenderOutput) and out.backend == "reference"
    assert out.rgb.shape == (1, H, W, 3) and out.alpha.shape == (1, H, W, 1)
    assert out.depth.shape == (1, H, W, 1)

    s = sigma * FOCAL / z  # standard deviation in pixels
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    r2 = (xs - W / 2) ** 2 + (ys - H / 2) ** 2
    alpha = opacity * torch.exp(-0.5 * r2 / (s * s + 0.3))
    alpha = torch.where(alpha < 1 / 255, torch.zeros_like(alpha), alpha.clamp_max(0.999))
    torch.testing.assert_close(out.alpha[0, ..., 0], alpha, atol=2e-6, rtol=1e-5)
    expected_rgb = torch.tensor(colour) * alpha[..., None] + torch.tensor(bg) * (1 - alpha[..., None])
    torch.testing.assert_close(out.rgb[0], expected_rgb, atol=2e-6, rtol=1e-5)
    drawn = alpha > 0
    assert drawn.sum() > 20 and (~drawn).sum() > 20  # the test covers both regions
    torch.testing.assert_close(out.depth[0, ..., 0][drawn], torch.full_like(alpha[drawn], z), rtol=1e-5, atol=0)
    assert (out.depth[0, ..., 0][~drawn] == 0).all()


def test_supersampling_box_filters_fine_pixels_and_keeps_the_gaussian_in_place():
    # A sub-pixel Gaussian off the pixel grid: rendered at 2x and averaged per 2x2 block, every
    # coarse pixel is the mean of the closed form at its 4 fine pixel centres (s and eps2d at 2x).
    z, sigma, opacity, dx = 3.0, 0.02, 0.3, 0.13  # opacity < 255 e^-4.5: alpha ends before the 3-sigma box
    g = make_gaussians([[dx, 0.0, z]], sigma, opacity, [1.0, 1.0, 1.0])
    out = render(g, *camera(), W, H, backend="reference", supersample=2)
    assert out.rgb.shape == (1, H, W, 3) and out.alpha.shape == out.depth.shape == (1, H, W, 1)

    s2 = 2 * sigma * FOCAL / z  # standard deviation in fine pixels
    centre = 2 * (W / 2 + dx * FOCAL / z), 2 * (H / 2)  # in fine pixels
    ys, xs = torch.meshgrid(torch.arange(2 * H) + 0.5, torch.arange(2 * W) + 0.5, indexing="ij")
    var_x = s2 * s2 * (1 + (dx / z) ** 2) + 0.3  # the projection stretches an off-axis Gaussian along x
    fine = opacity * torch.exp(-0.5 * ((xs - centre[0]) ** 2 / var_x + (ys - centre[1]) ** 2 / (s2 * s2 + 0.3)))
    fine = torch.where(fine < 1 / 255, torch.zeros_like(fine), fine.clamp_max(0.999))
    expected = fine.reshape(H, 2, W, 2).mean(dim=(1, 3))
    torch.testing.assert_close(out.alpha[0, ..., 0], expected, atol=2e-6, rtol=1e-5)

    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    a = out.alpha[0, ..., 0]
    assert float((a * xs).sum() / a.sum()) == pytest.approx(W / 2 + dx * FOCAL / z, abs=0.05)  # a shifted grid is off by 0.25+
    assert float((a * ys).sum() / a.sum()) == pytest.approx(H / 2, abs=0.05)
    plain = render(g, *camera(), W, H, backend="reference").alpha[0, ..., 0]
    assert float(a.sum()) < 0.8 * float(plain.sum())  # eps2d dilates a sub-pixel splat less at 2x
    with pytest.raises(ConfigError, match="supersample"):
        render(g, *camera(), W, H, backend="reference", supersample=1.5)


def test_opacity_cap_at_0999():
    g = make_gaussians([[0.0, 0.0, 2.0]], 1.0, 0.99999, [1.0, 1.0, 1.0])
    out = render(g, *camera(), W, H, backend="reference")
    assert out.alpha.max().item() == pytest.approx(0.999, abs=1e-6)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_near_gaussian_occludes_far_one_regardless_of_input_order(order):
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 4.0]])  # red near, blue far
    rgbs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    g = make_gaussians(means[order], torch.tensor([[0.3, 0.3, 0.3], [0.6, 0.6, 0.6]])[order], 0.95, rgbs[order])
    out = render(g, *camera(), W, H, backend="reference")
    centre = out.rgb[0, H // 2, W // 2]
    assert centre[0] > 0.9 and centre[2] < 0.06
    assert out.depth[0, H // 2, W // 2, 0] < 2.2  # the expected depth is dominated by the near one


def test_input_order_does_not_change_the_image():
    torch.manual_seed(0)
    n = 30
    means = torch.randn(n, 3) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    g = make_gaussians(means, torch.rand(n, 3) * 0.1 + 0.03, torch.rand(n) * 0.9 + 0.05, torch.rand(n, 3))
    perm = torch.randperm(n)
    g2 = make_gaussians(means[perm], g.scales[perm], g.opacities[perm], g.rgbs[perm])
    a = render(g, *camera(), W, H, backend="reference")
    b = render(g2, *camera(), W, H, backend="reference")
    assert_close_f32(a.rgb, b.rgb)  # the same sums in another order
    assert_close_f32(a.depth, b.depth)


def test_transmittance_stop_rule_excludes_the_gaussian_that_would_end_it():
    # Three large, nearly opaque Gaussians: alpha at the centre is capped at 0.999. After the first
    # T = 1e-3; the second would take it to 1e-6 <= 1e-4, so gsplat stops *before* it: the green
    # and blue ones contribute nothing, and the background keeps its share T = 1e-3.
    means = [[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 3.0]]
    rgbs = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    g = make_gaussians(means, 5.0, 0.99999, rgbs)
    bg = torch.tensor([0.0, 0.0, 10.0])
    out = render(g, *camera(), W, H, background=bg, backend="reference")
    centre = out.rgb[0, H // 2, W // 2]
    torch.testing.assert_close(centre, torch.tensor([0.999, 0.0, 10.0 * 0.001]), atol=1e-5, rtol=1e-4)
    assert out.alpha[0, H // 2, W // 2, 0].item() == pytest.approx(0.999, abs=1e-6)
    assert out.depth[0, H // 2, W // 2, 0].item() == pytest.approx(1.0, abs=1e-5)


def test_background_colour_per_camera_and_defaults():
    g = make_gaussians([[0.0, 0.0, -3.0]], 0.2, 0.9, [1.0, 1.0, 1.0])  # behind: nothing drawn
    viewmats, Ks = camera(C=2)
    bgs = torch.tensor([[0.25, 0.5, 0.75], [1.0, 0.0, 0.5]])
    out = render(g, viewmats, Ks, W, H, background=bgs, backend="reference")
    torch.testing.assert_close(out.rgb, bgs[:, None, None, :].expand(2, H, W, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all()
    black = render(g, viewmats, Ks, W, H, backend="reference")
    assert (black.rgb == 0).all()
    listed = render(g, viewmats, Ks, W, H, background=(0.5, 0.5, 0.5), backend="reference")
    assert torch.allclose(listed.rgb, torch.tensor(0.5))


def test_batch_dims_match_per_scene_renders():
    torch.manual_seed(1)
    B, C, n = 2, 3, 12
    means = torch.randn(B, n, 3) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    g = make_gaussians(means, torch.rand(B, n, 3) * 0.1 + 0.05, torch.rand(B, n) * 0.9 + 0.05, torch.rand(B, n, 3))
    viewmats, Ks = camera(C=B * C)
    viewmats[:, :3, 3] = torch.randn(B * C, 3) * 0.2  # shift each camera a bit
    viewmats, Ks = viewmats.reshape(B, C, 4, 4), Ks.reshape(B, C, 3, 3)
    bg = torch.rand(B, C, 3)
    out = render(g, viewmats, Ks, W, H + 8, background=bg, backend="reference")
    assert out.rgb.shape == (B, C, H + 8, W, 3)
    assert out.alpha.shape == out.depth.shape == (B, C, H + 8, W, 1)
    for b in range(B):
        single = render(g.scene(b), viewmats[b], Ks[b], W, H + 8, background=bg[b], backend="reference")
        assert_close_f32(out.rgb[b], single.rgb)  # batched and per-scene kernels sum in other orders
        assert_close_f32(out.depth[b], single.depth)


def test_camera_batch_mismatch_raises():
    g = make_gaussians(torch.zeros(2, 4, 3) + torch.tensor([0, 0, 3.0]), 0.1, 0.5, [1.0, 0, 0])
    viewmats, Ks = camera(C=3)
    with pytest.raises(ValueError, match="batch dims"):
        render(g, viewmats, Ks, W, H, backend="reference")


def test_offscreen_and_behind_camera_gaussians_contribute_nothing():
    visible = [[0.0, 0.0, 3.0]]
    hidden = [
        [0.0, 0.0, -3.0],  # behind the camera
        [0.0, 0.0, 0.005],  # in front of the near plane
        [40.0, 0.0, 3.0],  # far right, off screen
        [0.0, -40.0, 3.0],  # far above
    ]
    g = make_gaussians(visible, 0.2, 0.9, [0.0, 1.0, 0.0])
    g_all = make_gaussians(visible + hidden, 0.2, 0.9, [0.0, 1.0, 0.0])
    a = render(g, *camera(), W, H, backend="reference")
    b = render(g_all, *camera(), W, H, backend="reference")
    torch.testing.assert_close(a.rgb, b.rgb)
    torch.testing.assert_close(a.alpha, b.alpha)
    only_hidden = render(make_gaussians(hidden, 0.2, 0.9, [0.0, 1.0, 0.0]), *camera(), W, H, backend="reference")
    assert (only_hidden.alpha == 0).all()


def test_gradients_reach_every_attribute_and_are_finite():
    torch.manual_seed(2)
    n = 20
    means = torch.randn(n, 3) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    g = make_gaussians(means, torch.rand(n, 3) * 0.1 + 0.05, torch.rand(n) * 0.8 + 0.1, torch.rand(n, 3), quats)
    params = [g.means, g.log_scales, g.quats, g.opacity_logits, g.sh_dc]
    for p in params:
        p.requires_grad_(True)
    out = render(g, *camera(C=2), W, H, background=[0.3, 0.3, 0.3], backend="reference")
    loss = (out.rgb * torch.rand_like(out.rgb)).sum() + out.alpha.sum() + 0.1 * out.depth.sum()
    loss.backward()
    for name, p in zip(["means", "log_scales", "quats", "opacity_logits", "sh_dc"], params):
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_reference_gradient_matches_finite_differences():
    torch.manual_seed(3)
    means = torch.tensor([[0.05, -0.02, 3.0], [-0.1, 0.08, 3.5]], dtype=torch.float64)
    g = make_gaussians(means.float(), [[0.12, 0.08, 0.1], [0.1, 0.15, 0.1]], [0.7, 0.6], [[1.0, 0.2, 0.1], [0.1, 0.3, 0.9]])
    g = Gaussians(**{k: (v.double() if v.is_floating_point() else v) for k, v in vars(g).items()})
    viewmats, Ks = camera(w=16, h=16)
    weights = torch.rand(1, 16, 16, 3, dtype=torch.float64)

    def loss(log_scales):
        gg = Gaussians(**{**vars(g), "log_scales": log_scales})
        return (render(gg, viewmats.double(), Ks.double(), 16, 16, backend="reference").rgb * weights).sum()

    x = g.log_scales.clone().requires_grad_(True)
    loss(x).backward()
    eps = 1e-6
    for idx in [(0, 0), (1, 1), (0, 2)]:
        xp, xm = x.detach().clone(), x.detach().clone()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (loss(xp) - loss(xm)) / (2 * eps)
        assert x.grad[idx].item() == pytest.approx(fd.item(), rel=1e-3, abs=1e-6)


def test_backend_selection_on_cpu():
    assert resolve_backend("cpu", "auto") == "reference"
    assert resolve_backend(torch.device("cpu"), "reference") == "reference"
    assert backend_report("cpu") == "reference (PyTorch, CPU)"
    with pytest.raises(ConfigError):
        resolve_backend("cpu", "opengl")


def test_explicit_gsplat_on_cpu_raises_a_helpful_error():
    g = make_gaussians([[0.0, 0.0, 3.0]], 0.2, 0.9, [1.0, 1.0, 1.0])
    with pytest.raises(RenderBackendError) as info:
        render(g, *camera(), W, H, backend="gsplat")
    message = str(info.value)
    assert "gsplat" in message and "CPU" in message and 'backend="reference"' in message


def test_auto_on_cpu_uses_the_reference_without_warning(recwarn):
    g = make_gaussians([[0.0, 0.0, 3.0]], 0.2, 0.9, [1.0, 1.0, 1.0])
    out = render(g, *camera(), W, H)
    assert out.backend == "reference"
    assert not [w for w in recwarn if "gsplat" in str(w.message)]


# ---------------------------------------------------------------------------------------- GPU parity
def orbit_cameras(B: int, C: int, generator: torch.Generator, radius: float = 2.7, size: int = 128):
    """[B, C] world-to-camera matrices on an orbit looking at the origin (OpenCV axes) and K."""
    yaw = (torch.rand(B, C, generator=generator) - 0.5) * 2.0 * math.pi
    pitch = (torch.rand(B, C, generator=generator) - 0.5) * 0.8
    eye = radius * torch.stack(
        [torch.cos(pitch) * torch.sin(yaw), -torch.sin(pitch), -torch.cos(pitch) * torch.cos(yaw)], -1
    )
    forward = torch.nn.functional.normalize(-eye, dim=-1)
    down = torch.tensor([0.0, 1.0, 0.0]).expand_as(forward)
    right = torch.nn.functional.normalize(torch.cross(down, forward, dim=-1), dim=-1)
    down = torch.cross(forward, right, dim=-1)
    cam2world = torch.eye(4).repeat(B, C, 1, 1)
    cam2world[..., :3, 0], cam2world[..., :3, 1], cam2world[..., :3, 2] = right, down, forward
    cam2world[..., :3, 3] = eye
    f = 4.2647 * size  # the FFHQ intrinsics
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]).expand(B, C, 3, 3).clone()
    return torch.linalg.inv(cam2world), K


def random_scene(B: int, n: int, generator: torch.Generator) -> Gaussians:
    r = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    rn = lambda *s: torch.randn(*s, generator=generator)  # noqa: E731
    means = torch.nn.functional.normalize(rn(B, n, 3), dim=-1) * r(B, n, 1).pow(1 / 3) * 0.25
    return Gaussians(
        means=means,
        log_scales=math.log(0.02) + 0.7 * rn(B, n, 3),
        quats=rn(B, n, 4),
        opacity_logits=2.0 * rn(B, n),
        sh_dc=rn(B, n, 3),
        level=torch.zeros(n, dtype=torch.long),
        parent=torch.full((n,), -1, dtype=torch.long),
    )


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


PARITY_THRESHOLD_DB = 40.0


def compare_backends(device, fast_backend: str = "gsplat", seeds=(0, 1, 2)) -> list[tuple[int, float, float]]:
    """Renders random scenes with `fast_backend` and the reference; prints and returns
    (seed, rgb PSNR, alpha PSNR) per seed. (On CPU, fast_backend="reference" dry-runs this code.)"""
    results = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        B, C, n, size = 2, 3, 4000, 128
        g = random_scene(B, n, gen).to(device)
        for p in (g.means, g.log_scales, g.quats, g.opacity_logits, g.sh_dc):
            p.requires_grad_(True)
        viewmats, Ks = orbit_cameras(B, C, gen, size=size)
        viewmats, Ks = viewmats.to(device), Ks.to(device)
        bg = torch.rand(B, C, 3, generator=gen).to(device)
        fast = render(g, viewmats, Ks, size, size, background=bg, backend=fast_backend)
        ref = render(g, viewmats, Ks, size, size, background=bg, backend="reference")
        assert fast.backend == fast_backend and ref.backend == "reference"
        assert fast.rgb.shape == ref.rgb.shape == (B, C, size, size, 3)
        assert fast.alpha.shape == ref.alpha.shape == fast.depth.shape == (B, C, size, size, 1)
        p_rgb, p_alpha = psnr(fast.rgb.clamp(0, 1), ref.rgb.clamp(0, 1)), psnr(fast.alpha, ref.alpha)
        both = (fast.alpha > 0.5) & (ref.alpha > 0.5)
        depth_err = (fast.depth - ref.depth).abs()[both].median().item()
        print(
            f"seed {seed}: B={B} C={C} N={n} {size}x{size} coverage={fast.alpha.mean().item():.2f} "
            f"PSNR rgb={p_rgb:.2f} dB alpha={p_alpha:.2f} dB median|depth diff|={depth_err:.2e}"
        )
        results.append((seed, p_rgb, p_alpha))
        # Gradients of one loss through both backends (printed for information, not asserted).
        weights = torch.rand(fast.rgb.shape, generator=gen).to(device)
        names = ("means", "log_scales", "quats", "opacity_logits", "sh_dc")
        leaves = [getattr(g, name) for name in names]
        grads_fast = torch.autograd.grad((fast.rgb * weights).sum(), leaves)
        grads_ref = torch.autograd.grad((ref.rgb * weights).sum(), leaves)
        cosines = []
        for name, ga, gb in zip(names, grads_fast, grads_ref):
            cos = torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), dim=0).item()
            cosines.append(f"{name}={cos:.4f}")
        print(f"seed {seed}: gradient cosine {fast_backend} vs reference: {' '.join(cosines)}")
    return results


@pytest.mark.gpu
def test_gsplat_and_reference_agree_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA and gsplat: torch.cuda.is_available() is False on this machine")
    try:
        import gsplat  # noqa: F401
    except Exception as exc:
        pytest.skip(f"needs CUDA and gsplat: gsplat does not import ({type(exc).__name__}: {exc})")
    device = torch.device("cuda")
    print(f"\nbackend: {backend_report(device)}  device: {torch.cuda.get_device_name(device)}")
    assert resolve_backend(device, "auto") == "gsplat", backend_report(device)
    results = compare_backends(device, "gsplat")
    for seed, p_rgb, p_alpha in results:
        assert p_rgb >= PARITY_THRESHOLD_DB, f"seed {seed}: rgb PSNR {p_rgb:.2f} < {PARITY_THRESHOLD_DB}"
        assert p_alpha >= PARITY_THRESHOLD_DB, f"seed {seed}: alpha PSNR {p_alpha:.2f} < {PARITY_THRESHOLD_DB}"


def test_auto_falls_back_with_one_warning_when_gsplat_fails(monkeypatch):
    import sys
    import warnings

    render_module = sys.modules["gsgan_core.render.render"]  # the module, not the function

    monkeypatch.setattr(render_module, "_gsplat_problem", lambda device: "its CUDA JIT compile failed")
    monkeypatch.setattr(render_module, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match='compile failed.*backend="reference"'):
        assert resolve_backend("cuda:0", "auto") == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        assert resolve_backend("cuda:0", "auto") == "reference"
    with pytest.raises(RenderBackendError, match='compile failed.*backend="reference"'):
        resolve_backend("cuda:0", "gsplat")
