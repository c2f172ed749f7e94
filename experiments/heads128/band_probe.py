"""What the demo's finest SWD band measures: is the generator too blurry or too noisy at 128 px?

    python experiments/heads128/band_probe.py assets/heads128.safetensors HELDOUT.zip [--num 400] [--rows levels]
        [--swd-normalise per-set]

HELDOUT.zip needs 2 x num images (`gsgan-dataset heads --count 1000 --resolution 128 --seed 1
--cameras orbit`). Prints SWD per band (finest first, x1e3; by default the joint normalisation, which
keeps differences in contrast; `--swd-normalise per-set` for the original's definition, which scales
them away: gsgan_core/metrics/swd.py) against the first num held-out images for: the other num
held-out images (the floor), the generator's images, those images sharpened (unsharp mask),
blurred and median-filtered (3x3), the held-out images blurred and median-filtered, and the
generator's images rendered with supersampling. If sharpening the fakes lowers the finest band and
blurring the reals raises it towards the fakes', the fakes lack fine detail rather than carry noise.
About 25 minutes on a CPU at num 400.

--rows levels asks which Gaussians draw each band instead: after the floor and the generator's images
come the same scenes with every Gaussian's colour clamped to [0, 1] (RGB = SH_C0 * sh_dc + 0.5 has
no upper bound, like gsplat's), and with the finest levels left out (opacity 0), one more at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable

import torch

from gsgan_core.data.dataset import ImageDataset, real_images
from gsgan_core.gaussians import SH_C0, Gaussians
from gsgan_core.io.checkpoint import load_checkpoint
from gsgan_core.metrics.swd import sliced_wasserstein
from gsgan_core.models.sampling import fake_images
from gsgan_core.train.losses import blur_images


class EditedGenerator:
    """A generator whose Gaussians pass through `edit` before they are rendered (for fake_images)."""

    def __init__(self, G, edit: Callable[[Gaussians], Gaussians]):
        self.G, self.edit, self.config, self.mapping = G, edit, G.config, G.mapping

    def synthesize(self, ws, view_dirs=None, return_anchors: bool = False):
        gaussians, anchors = self.G.synthesize(ws, view_dirs, return_anchors=True)
        gaussians = self.edit(gaussians)
        return (gaussians, anchors) if return_anchors else gaussians


def clamp_colours(g: Gaussians) -> Gaussians:  # every Gaussian's RGB into [0, 1]
    return dataclasses.replace(g, sh_dc=g.sh_dc.clamp(-0.5 / SH_C0, 0.5 / SH_C0))


def without_levels(levels: list[int]) -> Callable[[Gaussians], Gaussians]:
    def edit(g: Gaussians) -> Gaussians:
        hidden = torch.isin(g.level, torch.tensor(levels, device=g.level.device))
        return dataclasses.replace(g, opacity_logits=g.opacity_logits.masked_fill(hidden, -30.0))
    return edit


def median_3x3(images: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> the same, each pixel its 3x3 median
    N, C, H, W = images.shape
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate")
    return torch.nn.functional.unfold(padded, 3).view(N, C, 9, H, W).median(dim=2).values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("network")
    parser.add_argument("heldout")
    parser.add_argument("--num", type=int, default=400)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", choices=["sharpness", "levels"], default="sharpness",
                        help="sharpness: sharpened and blurred images; levels: clamped colours, levels left out")
    parser.add_argument("--swd-normalise", choices=["joint", "per-set"], default="joint",
                        help="joint (default: sees contrast, what this probe asks about) or per-set (the original's)")
    args = parser.parse_args()
    dataset = ImageDataset(args.heldout)
    if len(dataset) < 2 * args.num:
        sys.exit(f"band_probe: {args.heldout} has {len(dataset)} images; --num {args.num} needs {2 * args.num}")
    G, info = load_checkpoint(args.network)
    G = G.to(args.device).eval()
    R = info.resolution
    reals_a = real_images(dataset, range(args.num), R)
    reals_b = real_images(dataset, range(args.num, 2 * args.num), R)
    labels = dataset.labels[: args.num]
    fakes = fake_images(G, labels, R, 0, args.device)

    def row(name: str, images: torch.Tensor) -> None:
        swd = sliced_wasserstein(reals_a, images.clamp(-1, 1), device=args.device, normalise=args.swd_normalise)
        if name == "held-out vs held-out":  # the first row names the bands
            bands = " / ".join(f"{r} px" for r in swd["resolutions"])
            print(f"SWD x1e3 per band ({bands}), {args.num} images, {args.swd_normalise} normalisation")
        print(f"{name:28s}", " / ".join(f"{v:6.1f}" for v in swd["levels"]), flush=True)

    row("held-out vs held-out", reals_b)
    row("generated", fakes)
    if args.rows == "levels":
        row("generated, colours in [0, 1]", fake_images(EditedGenerator(G, clamp_colours), labels, R, 0, args.device))
        L = G.config.num_levels
        for first in range(L - 1, 0, -1):
            name = f"generated, without L{first}" + (f"..L{L - 1}" if first < L - 1 else "")
            edited = EditedGenerator(G, without_levels(list(range(first, L))))
            row(name, fake_images(edited, labels, R, 0, args.device))
        return
    for amount in (0.5, 1.0):
        row(f"generated, unsharp {amount}", fakes + amount * (fakes - blur_images(fakes, 0.7)))
    row("generated, blur 0.4 px", blur_images(fakes, 0.4))
    # A 3x3 median smooths texture and keeps edges: if it lowered the finest band as much as the
    # unsharp mask, the fakes would carry noise; applied to the reals too, for what it costs them.
    row("generated, median 3x3", median_3x3(fakes))
    row("held-out, median 3x3", median_3x3(reals_b))
    for sigma in (0.4, 0.6):
        row(f"held-out, blur {sigma} px", blur_images(reals_b, sigma))
    row("generated, supersample 2", fake_images(G, labels, R, 0, args.device, supersample=2))


if __name__ == "__main__":
    main()
