"""`gsgan-metrics --network CKPT --data DATASET`: SWD (always) and FID (with --fid-weights) of a generator.

SWD is also computed between two disjoint sets of reals: the floor that a perfect generator would reach
with this many images.

Flags are checked before any work starts (a ConfigError is one line and exit status 1, through
`gsgan_core.cli.console`). The slow parts show progress bars on stderr; what makes a figure doubtful
(a reduced --num, a sample too small, a checkpoint made for another resolution) is said there too,
and with --json also listed under "warnings".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch

from gsgan_core.arguments import add_device, parse_device, parse_number, parse_seed
from gsgan_core.errors import ConfigError, DatasetError, UsageError
from gsgan_core.models.sampling import fake_images

METRICS = ("swd", "fid", "levels")  # what --metrics may name

# Fewer images than these per set and the figure says more about the sample than about the generator:
# SWD's noise between two samples of the same images grows past most differences between generators,
# and FID's 2048 x 2048 feature covariance is singular below 2048 images (its bias then dominates).
SWD_MIN_IMAGES = 256
FID_MIN_IMAGES = 2048
BATCH = 16  # images per step of the progress bars (fake_images' own batch, so the images are the same)


def metrics_command(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gsgan-metrics", description="Compare generated and real images.")
    parser.add_argument("--network", required=True, help="generator checkpoint (.safetensors)")
    parser.add_argument("--data", required=True, help="EG3D dataset (folder or .zip) of real images")
    parser.add_argument("--num", type=int, default=1000, help="images per set (at least 1; at most half the "
                        "dataset, so that the real-vs-real floor has two disjoint sets)")
    parser.add_argument("--metrics", default="swd", help=f"comma-separated: {', '.join(METRICS)} (levels: each "
                        "hierarchy level's share of the image, on 16 of the images; near 0 = a dead level)")
    parser.add_argument("--swd-normalise", choices=["per-set", "joint", "both"], default="per-set",
                        help="per-set: the original SWD's (each set's patches by its own statistics); joint: one "
                        "normalisation for both sets, stricter about contrast; both: the two, the joint one as swd_joint*")
    parser.add_argument("--fid-weights", default="", help="local FID Inception weights (.pth or .safetensors)")
    parser.add_argument("--seed", type=int, default=0)
    add_device(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args(argv)
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(METRICS))
    if unknown:
        raise UsageError(f"--metrics: unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    if not wanted:
        raise ConfigError(f"--metrics names no metric; known: {', '.join(METRICS)}")
    parse_number(args.num, "--num", 1, integer=True)
    parse_seed(args.seed)
    device = parse_device(args.device)
    # With --json, stdout carries the one JSON object: what the work prints (gsplat's first-use build
    # message, for one) goes to stderr.
    results: dict = {}
    warnings: list[str] = []
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        _measure(args, wanted, device, results, warnings)
    if args.json:
        print(json.dumps({**results, **({"warnings": warnings} if warnings else {})}))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return 0


def _warn(warnings: list[str], text: str) -> None:
    warnings.append(text)
    from tqdm import tqdm

    tqdm.write(f"gsgan-metrics: warning: {text}", file=sys.stderr)  # on its own line, not inside a progress bar


def _in_batches(total: int, desc: str, make) -> torch.Tensor:
    """torch.cat of make(start, stop) over batches of BATCH, with a progress bar on stderr."""
    from tqdm import tqdm

    parts = []
    with tqdm(total=total, desc=desc, unit="img", file=sys.stderr) as bar:
        for start in range(0, total, BATCH):
            stop = min(total, start + BATCH)
            parts.append(make(start, stop))
            bar.update(stop - start)
    return torch.cat(parts)


def _measure(args, wanted: list[str], device: torch.device, results: dict, warnings: list[str]) -> None:
    """Fills `results`; raises GsganError (the console prints it) for a bad file or flag."""
    from tqdm import tqdm

    from gsgan_core.data.dataset import ImageDataset, check_dataset, real_images
    from gsgan_core.io.open import load_generator
    from gsgan_core.metrics.fid import FIDUnavailable, fid
    from gsgan_core.metrics.swd import sliced_wasserstein

    if "fid" in wanted and not args.fid_weights:
        raise FIDUnavailable("FID was asked for but no --fid-weights FILE was given; FID needs the Inception "
                             "weights as a local file (nothing is downloaded). SWD needs none.")
    G, info = load_generator(args.network)  # a bad file stops before the dataset is read
    check_dataset(args.data, progress=True)
    dataset = ImageDataset(args.data)
    G = G.to(device).eval()
    resolution = info.resolution
    if dataset.resolution != resolution:
        _warn(warnings, f"{args.network} was trained at {resolution} px, {args.data} is {dataset.resolution} px: "
                        f"the real images are resized to {resolution} px, so the figures are not those of training")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))
    comparing = bool({"swd", "fid"} & set(wanted))
    num = min(args.num, len(dataset) // 2) if comparing else min(args.num, len(dataset))
    if num < 1:
        raise DatasetError(args.data, f"has {len(dataset)} image(s); SWD and FID need at least 2 (two disjoint "
                                      "sets of real images: one against the generator, one for the real-vs-real floor)")
    if num < args.num:
        why = (f"it has {len(dataset)} images, and the real-vs-real floor needs two disjoint sets of {num}"
               if comparing else f"it has {len(dataset)} images")
        print(f"gsgan-metrics: note: --num {args.num} reduced to {num} for {args.data}: {why}", file=sys.stderr)
    # Rendered as in training: a generator trained on box-filtered fakes is judged on them too.
    supersample = int(info.training.get("render_supersample", 1))
    results.update(num=num, resolution=resolution, render_supersample=supersample)
    if comparing:
        reals_a = _in_batches(num, "real images (set A)", lambda a, b: real_images(dataset, order[a:b], resolution))
        reals_b = _in_batches(num, "real images (set B)",
                              lambda a, b: real_images(dataset, order[num + a : num + b], resolution))
        labels = dataset.labels[order[:num]]
        fakes = _in_batches(num, "generated images", lambda a, b: fake_images(
            G, labels[a:b], resolution, args.seed + a, device, batch=BATCH, supersample=supersample))
    if "swd" in wanted:
        if num < SWD_MIN_IMAGES:
            _warn(warnings, f"{num} images per set are too few for SWD to mean much (at least {SWD_MIN_IMAGES}): "
                            "two samples of the same images differ by more than most generators do")
        variants = {"per-set": [("swd", "per-set")], "joint": [("swd", "joint")],
                    "both": [("swd", "per-set"), ("swd_joint", "joint")]}[args.swd_normalise]
        results["swd_normalise"] = variants[0][1]
        with tqdm(total=2 * len(variants), desc="SWD", unit="set", file=sys.stderr) as bar:
            for key, normalise in variants:
                swd = sliced_wasserstein(reals_a, fakes, seed=args.seed, device=device, normalise=normalise)
                bar.update()
                floor = sliced_wasserstein(reals_a, reals_b, seed=args.seed, device=device, normalise=normalise)
                bar.update()
                results.update({key: swd["mean"], f"{key}_levels": swd["levels"], f"{key}_real_floor": floor["mean"],
                                f"{key}_real_floor_levels": floor["levels"]})
                if swd["mean"] <= floor["mean"]:
                    _warn(warnings, f"{key} {swd['mean']:.4g} is at or below its own real-vs-real floor "
                                    f"{floor['mean']:.4g}: with {num} images the figure cannot tell the generator "
                                    "from the data; use a larger --num (and dataset)")
        results["swd_resolutions"] = swd["resolutions"]
    if "levels" in wanted:
        from gsgan_core.metrics.levels import generator_level_contributions
        from gsgan_core.models.sampling import z_from_seeds

        m = min(num, 16)
        print(f"gsgan-metrics: level contributions on {m} images ...", file=sys.stderr)
        z = z_from_seeds(range(args.seed, args.seed + m), G.config.z_dim, device)
        share = generator_level_contributions(G, z, dataset.labels[order[:m]].to(device), resolution)
        results["level_contributions"] = [share[k] for k in sorted(share) if k >= 0]
    if "fid" in wanted:
        if num < FID_MIN_IMAGES:
            _warn(warnings, f"{num} images per set are too few for FID to mean much (at least {FID_MIN_IMAGES}, "
                            "the Inception features' dimension; below it FID's bias dominates)")
        with tqdm(total=2, desc="FID", unit="set", file=sys.stderr) as bar:
            results["fid"] = fid(reals_a, fakes, args.fid_weights, device)
            bar.update()
            results["fid_real_floor"] = fid(reals_a, reals_b, args.fid_weights, device)
            bar.update()
