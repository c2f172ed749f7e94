"""`gsgan-metrics --network CKPT --data DATASET`: SWD (always) and FID (with --fid-weights) of a generator.

SWD is also computed between two disjoint sets of reals: the floor that a perfect generator would reach
with this many images.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch

from gsgan_core.errors import GsganError
from gsgan_core.models.sampling import fake_images, real_images  # noqa: F401  (also this module's API)


def metrics_command(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gsgan-metrics", description="Compare generated and real images.")
    parser.add_argument("--network", required=True, help="generator checkpoint (.safetensors)")
    parser.add_argument("--data", required=True, help="EG3D dataset (folder or .zip) of real images")
    parser.add_argument("--num", type=int, default=1000, help="images per set")
    parser.add_argument("--metrics", default="swd", help="comma-separated: swd, fid, levels (each hierarchy "
                        "level's share of the image, on 16 of the images; near 0 = a dead level)")
    parser.add_argument("--swd-normalise", choices=["per-set", "joint", "both"], default="per-set",
                        help="per-set: the original SWD's (each set's patches by its own statistics); joint: one "
                        "normalisation for both sets, stricter about contrast; both: the two, the joint one as swd_joint*")
    parser.add_argument("--fid-weights", default="", help="local FID Inception weights (.pth or .safetensors)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args(argv)
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(wanted) - {"swd", "fid", "levels"})
    if unknown:
        print(f"gsgan-metrics: unknown metric(s) {unknown}; known: swd, fid, levels", file=sys.stderr)
        return 2
    # With --json, stdout carries the one JSON object: what the work prints (gsplat's first-use build
    # message, for one) goes to stderr.
    results: dict = {}
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        status = _measure(args, wanted, results)
    if status:
        return status
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return 0


def _measure(args, wanted: list[str], results: dict) -> int:  # fills results; 1 after a GsganError
    try:
        from gsgan_core.data.dataset import ImageDataset, check_dataset
        from gsgan_core.io.open import load_generator
        from gsgan_core.metrics.fid import FIDUnavailable, fid
        from gsgan_core.metrics.swd import sliced_wasserstein

        if "fid" in wanted and not args.fid_weights:
            raise FIDUnavailable("FID was asked for but no --fid-weights FILE was given; FID needs the Inception "
                                 "weights as a local file (nothing is downloaded). SWD needs none.")
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                              ("cpu" if args.device == "auto" else args.device))
        check_dataset(args.data)
        dataset = ImageDataset(args.data)
        G, info = load_generator(args.network)
        G = G.to(device).eval()
        resolution = info.resolution
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))
        num = min(args.num, len(dataset) // 2)
        # Rendered as in training: a generator trained on box-filtered fakes is judged on them too.
        supersample = int(info.training.get("render_supersample", 1))
        results.update(num=num, resolution=resolution, render_supersample=supersample)
        if {"swd", "fid"} & set(wanted):
            reals_a = real_images(dataset, order[:num], resolution)
            reals_b = real_images(dataset, order[num : 2 * num], resolution)
            fakes = fake_images(G, dataset.labels[order[:num]], resolution, args.seed, device,
                                supersample=supersample)
        if "swd" in wanted:
            variants = {"per-set": [("swd", "per-set")], "joint": [("swd", "joint")],
                        "both": [("swd", "per-set"), ("swd_joint", "joint")]}[args.swd_normalise]
            results["swd_normalise"] = variants[0][1]
            for key, normalise in variants:
                swd = sliced_wasserstein(reals_a, fakes, seed=args.seed, device=device, normalise=normalise)
                floor = sliced_wasserstein(reals_a, reals_b, seed=args.seed, device=device, normalise=normalise)
                results.update({key: swd["mean"], f"{key}_levels": swd["levels"], f"{key}_real_floor": floor["mean"],
                                f"{key}_real_floor_levels": floor["levels"]})
            results["swd_resolutions"] = swd["resolutions"]
        if "levels" in wanted:
            from gsgan_core.metrics.levels import generator_level_contributions
            from gsgan_core.models.sampling import z_from_seeds

            m = min(num, 16)
            z = z_from_seeds(range(args.seed, args.seed + m), G.config.z_dim, device)
            share = generator_level_contributions(G, z, dataset.labels[order[:m]].to(device), resolution)
            results["level_contributions"] = [share[k] for k in sorted(share) if k >= 0]
        if "fid" in wanted:
            results["fid"] = fid(reals_a, fakes, args.fid_weights, device)
            results["fid_real_floor"] = fid(reals_a, reals_b, args.fid_weights, device)
    except GsganError as err:
        print(f"gsgan-metrics: {err}", file=sys.stderr)
        return 1
    return 0
