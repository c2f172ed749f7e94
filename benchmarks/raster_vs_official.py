"""gsplat (gsgan's GPU rasterizer, camera model "gsgan") against the official renderer, on the same Gaussians.

    python benchmarks/raster_vs_official.py --official .official/repo --dgr .official/dgr --out DIR

Scenes: a few opaque Gaussians at known places (an offset or flip shows as a centroid shift), the same
half transparent, a large one, and the official FFHQ256 generator's output with random weights.
Prints PSNR (images clamped to [0, 1]) and per-channel centroids of both renders.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from gsgan_core.cameras import camera_forward, labels_to_cameras, orbit_camera, to_rasterizer
from gsgan_core.gaussians import Gaussians
from gsgan_core.render import render

from bench_official import DGR_BUILD_TIMEOUT_S, DgrBuild, Official, load_regenerate

FLIP = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def official_image(official: Official, g: Gaussians, cam2world: torch.Tensor, size: int) -> torch.Tensor:
    renderer = official.renderer_module
    cam = renderer.MiniCam(cam2world @ FLIP.to(cam2world), size, size, 12.96, 12.96, 2.25, 3.3, device="cuda")
    params = {"_xyz": g.means, "_features_dc": g.sh_dc.unsqueeze(1).contiguous(),
              "_features_rest": g.sh_dc.unsqueeze(1)[:, 0:0].contiguous(), "_scaling": g.log_scales,
              "_rotation": g.quats, "_opacity": g.opacity_logits.unsqueeze(-1)}
    out = renderer.Renderer(sh_degree=0).render(params, cam)
    return ((out["image"] + 1) / 2).permute(1, 2, 0)  # [H, W, 3]


def ours_image(g: Gaussians, cam2world: torch.Tensor, K: torch.Tensor, size: int, near: float) -> torch.Tensor:
    viewmats, Ks = to_rasterizer(cam2world[None], K[None], size, size, camera_model="gsgan")
    return render(g, viewmats, Ks, size, size, backend="gsplat", near_plane=near).rgb[0]


def centroid(img: torch.Tensor) -> list[float]:
    H, W, _ = img.shape
    weight = img.clamp(0, 1).sum(-1)
    ys, xs = torch.meshgrid(torch.arange(H, device=img.device), torch.arange(W, device=img.device), indexing="ij")
    total = weight.sum().clamp_min(1e-9)
    return [float((weight * xs).sum() / total), float((weight * ys).sum() / total)]


def scene(means, log_scale, opacity_logit, colors) -> Gaussians:
    n = len(means)
    return Gaussians(means=torch.tensor(means, device="cuda"), log_scales=torch.full((n, 3), log_scale, device="cuda"),
                     quats=torch.tensor([[1.0, 0, 0, 0]] * n, device="cuda"),
                     opacity_logits=torch.full((n,), opacity_logit, device="cuda"),
                     sh_dc=(torch.tensor(colors, device="cuda") - 0.5) / 0.28209479177387814,
                     level=torch.zeros(n, dtype=torch.long, device="cuda"), parent=torch.full((n,), -1, device="cuda"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True)
    parser.add_argument("--dgr", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build = DgrBuild(args.dgr, args.out / "dgr_build.log")
    build.start()
    path = build.finish(DGR_BUILD_TIMEOUT_S)
    print("dgr:", build.status, flush=True)
    regen = load_regenerate()
    official = Official(regen, args.official, tiny=False, dgr_path=path)
    assert official.has_real_rasterizer, official.rasterizer
    cam2world, K = orbit_camera(yaw=0.4, pitch=0.15, pivot=(0.0, 0.0, 0.2), device="cuda")
    three = [[0.0, 0.0, 0.2], [0.3, 0.1, 0.0], [-0.2, -0.25, 0.1]]
    rgb = [[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0]]
    scenes = {"three opaque": scene(three, math.log(0.03), 6.0, rgb),
              "three half": scene(three, math.log(0.03), 0.0, rgb),
              "one large": scene([[0.1, 0.0, 0.0]], math.log(0.4), 2.0, [[0.9, 0.7, 0.3]])}
    G_off, init_kwargs, state, pivot = official.build("ffhq256")
    from gsgan_core.io.official import generator_from_official

    G, _ = generator_from_official(init_kwargs, state)
    G = G.cuda()
    labels = regen.camera_labels(pivot)[:1].cuda()
    c2w, _ = labels_to_cameras(labels)
    z = torch.randn(1, 512, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.no_grad():
        scenes["ffhq256 random"] = G(z, labels, view_dirs=camera_forward(c2w)).scene(0)
    for name, g in scenes.items():
        for near in (0.01, 0.2):
            with torch.no_grad():
                a = official_image(official, g, cam2world, args.size).clamp(0, 1)
                b = ours_image(g, cam2world, K, args.size, near).clamp(0, 1)
            mse = float((a - b).square().mean())
            psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
            print(f"{name:16s} near {near}: PSNR {psnr:6.1f} dB  max {float((a - b).abs().max()):.3f}  "
                  f"centroid official {centroid(a)} gsplat {centroid(b)}", flush=True)
            if near == 0.01:
                torch.save({"official": a.cpu(), "gsplat": b.cpu()}, args.out / f"{name.replace(' ', '_')}.pt")


if __name__ == "__main__":
    main()
