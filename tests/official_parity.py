"""Parity of gsgan's GSGAN generator with the official code, on data the official code produced.

    python tests/official_parity.py DIR CONFIG [--device cpu|cuda] [--float32]

DIR holds CONFIG-weights.safetensors, CONFIG-init_kwargs.json and CONFIG-expected.safetensors, as
written by tests/fixtures/official/regenerate.py (the committed tiny fixtures, or full-size ones).
The weights go through the importer's path (`generator_from_official`), the same latents and
cameras through gsgan's generator; prints the largest differences and the PSNR of the two sets of
Gaussians rendered by the same rasterizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from gsgan_core.cameras import camera_forward, labels_to_cameras, to_rasterizer
from gsgan_core.gaussians import Gaussians
from gsgan_core.io.official import generator_from_official
from gsgan_core.render import render

ATTRIBUTES = ("means", "log_scales", "quats", "opacity_logits", "colors")


def load_case(folder: Path, name: str, float32: bool = False) -> tuple[dict, dict, dict]:
    """(weights, init kwargs, expected outputs) of configuration `name`; `float32`: the outputs of the
    official code run without its float16 casts (`regenerate.py --float32`), same weights."""
    weights = load_file(str(folder / f"{name}-weights.safetensors"))
    init_kwargs = json.loads((folder / f"{name}-init_kwargs.json").read_text())
    expected = load_file(str(folder / f"{name}-{'fp32-' if float32 else ''}expected.safetensors"))
    return weights, init_kwargs, expected


def _official_gaussians(expected: dict, latent: int, camera: int, like: Gaussians) -> Gaussians:
    return Gaussians(
        means=expected["sample_coordinates"][latent], log_scales=expected["scale"][latent],
        quats=expected["rotation"][latent], opacity_logits=expected["opacity"][latent].squeeze(-1),
        sh_dc=expected["color"][latent, camera], level=like.level, parent=like.parent,
    )


def compare(weights: dict, init_kwargs: dict, expected: dict, device: str = "cpu", resolution: int = 128,
            fp16_casts: bool = True) -> dict:
    """{attribute: largest |ours - official|} over every latent and camera, 'ws' too, and 'psnr_db' (the
    lowest over the renders). Quaternions are compared sign-aligned (q and -q are one rotation).
    `<attribute>@fp32` and `<attribute>@fp16`: the same over the Gaussians that the official code
    computes in float32 (levels before `fp16_from_level`, the background) and in float16 (the others).
    `fp16_casts=False` runs gsgan without the casts (for outputs of `regenerate.py --float32`)."""
    generator, _ = generator_from_official(init_kwargs, weights)
    if not fp16_casts:
        generator.config = generator.point_gen.config = dataclasses.replace(generator.config, fp16_casts=False)
    generator = generator.to(device)
    fp16_from = generator.config.fp16_from_level
    z, c = expected["z"].to(device), expected["c_mapping"].to(device)
    labels = expected["camera_labels"].to(device)  # [C, 25]
    psis = expected["truncation_psi"].tolist()
    cam2world, K_norm = labels_to_cameras(labels)
    viewmats, Ks = to_rasterizer(cam2world, K_norm, resolution, resolution, generator.config.camera_model)
    diffs = {key: 0.0 for key in ("ws",) + ATTRIBUTES + tuple(f"{a}@{p}" for a in ATTRIBUTES for p in ("fp32", "fp16"))}
    psnr = math.inf
    V = len(labels)
    with torch.no_grad():
        for latent, psi in enumerate(psis):
            # As the official forward ran: one batch of V copies of the latent, one per camera.
            ws = generator.mapping(z[latent].expand(V, -1), c[latent].expand(V, -1), psi=psi)
            diffs["ws"] = max(diffs["ws"], (ws[0].cpu() - expected["ws"][latent]).abs().max().item())
            batch = generator.synthesize(ws, camera_forward(cam2world)).to("cpu")
            for camera in range(V):
                ours = batch.scene(camera)
                theirs = _official_gaussians(expected, latent, camera, ours)
                sign = torch.where((ours.quats * theirs.quats).sum(-1, keepdim=True) < 0, -1.0, 1.0)
                pairs = {"means": (ours.means, theirs.means), "log_scales": (ours.log_scales, theirs.log_scales),
                         "quats": (ours.quats * sign, theirs.quats), "colors": (ours.sh_dc, theirs.sh_dc),
                         "opacity_logits": (ours.opacity_logits, theirs.opacity_logits)}
                half = ((ours.level >= fp16_from) & (ours.level >= 0)).cpu()  # [N] computed in float16
                for key, (a, b) in pairs.items():
                    error = (a - b).abs().reshape(len(a), -1).amax(-1)  # [N]
                    diffs[key] = max(diffs[key], error.max().item())
                    for part, mask in (("fp32", ~half), ("fp16", half)):
                        if mask.any():
                            diffs[f"{key}@{part}"] = max(diffs[f"{key}@{part}"], error[mask].max().item())
                images = [render(g.to(device), viewmats[camera:camera + 1], Ks[camera:camera + 1], resolution,
                                 resolution).rgb for g in (ours, theirs)]
                mse = (images[0] - images[1]).square().mean().item()
                psnr = min(psnr, math.inf if mse == 0 else 10 * math.log10(1.0 / mse))
    diffs["psnr_db"] = psnr
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--float32", action="store_true",
                        help="compare CONFIG-fp32-expected.safetensors (regenerate.py --float32) with gsgan's casts off")
    args = parser.parse_args()
    result = compare(*load_case(args.folder, args.config, args.float32), device=args.device,
                     resolution=args.resolution, fp16_casts=not args.float32)
    for key, value in result.items():
        print(f"{args.config} {key}: {value:.3g}")


if __name__ == "__main__":
    main()
