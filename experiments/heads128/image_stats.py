"""Where generated heads differ from held-out ones in the plainest image statistics.

    python experiments/heads128/image_stats.py assets/heads128.safetensors HELDOUT.zip [--num 300] [--hide-levels 3 4]

The coarse SWD bands see layout and colour; this prints what those are made of, for num held-out
images and num generated at the same cameras (psi 1, seeds 0..num-1): how much of the image the head
covers (pixels darker than 0.97 in some channel, on the white background the metrics composite
onto), the head's mean colour and its spread across images, a histogram of its pixels' brightness
(the mean of R, G and B) in ten bins, how many of them per image are light (brightness above 0.8)
and which share of those lies within 2 px of the background (a light fringe where the outline is
soft), how dark the outline is (the mean darkest channel of the 1 px rings one and two pixels in
from the background; lighter means a softer or wider edge), how many head pixels per image are faint
(darkest channel above 0.85), and how far the mean image, pooled to 16 px, lies from the held-out
one. About 5 minutes on a CPU at num 300.
--hide-levels renders the generated heads without those levels (opacity 0), to see which draw what.
HELDOUT.zip: `gsgan-dataset heads --count 1000 --resolution 128 --seed 1 --cameras orbit`.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from gsgan_core.data.dataset import ImageDataset, real_images
from gsgan_core.io.checkpoint import load_checkpoint
from gsgan_core.models.sampling import fake_images

from band_probe import EditedGenerator, without_levels  # this script's folder

BACKGROUND = 0.97  # a pixel lighter than this in every channel counts as the white background


def describe(name: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Print one row of statistics for images [n, 3, R, R] in [-1, 1]; return their mean at 16 px
    ([3, 16, 16]) and how often each of those 16 x 16 cells is head ([16, 16])."""
    x = ((images + 1) / 2).clamp(0, 1)
    darkest = x.min(dim=1).values  # [n, R, R]
    head = darkest < BACKGROUND
    coverage = head.float().mean(dim=(1, 2))
    colour = (x * head[:, None]).sum(dim=(2, 3)) / head.sum(dim=(1, 2))[:, None]  # [n, 3]
    brightness = x.mean(dim=1)  # [n, R, R]
    histogram = torch.histc(brightness[head], bins=10, min=0, max=1) / head.sum()
    # The outline: rings 1 px wide, the first touching the background. On white, a pixel's darkest
    # channel is about 1 - its alpha (for a dark head), so a soft or wide edge shows as light rings.
    rings, near_background = [], ~head
    for _ in range(2):
        grown = F.max_pool2d(near_background.float()[:, None], 3, stride=1, padding=1)[:, 0] > 0
        rings.append(darkest[grown & ~near_background].mean())
        near_background = grown  # after both rings: the background and every pixel within 2 px of it
    light = head & (brightness > 0.8)
    fringe = (light & near_background).sum() / light.sum().clamp(min=1)
    faint = (head & (darkest > 0.85)).sum() / len(x)
    print(f"{name:10s} {coverage.mean():.3f} +- {coverage.std():.3f}   "
          f"{' '.join(f'{v:.3f}' for v in colour.mean(dim=0))} +- "
          f"{' '.join(f'{v:.3f}' for v in colour.std(dim=0))}   "
          f"{' '.join(f'{v:.3f}' for v in histogram)}   "
          f"{light.sum() / len(x):5.0f} ({fringe:.2f})   "
          f"{rings[0]:.3f} {rings[1]:.3f}   {faint:5.0f}", flush=True)
    head_at_16 = F.adaptive_avg_pool2d(head[:, None].float(), 16).mean(dim=(0, 1))
    return F.adaptive_avg_pool2d(x, 16).mean(dim=0), head_at_16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("network")
    parser.add_argument("heldout")
    parser.add_argument("--num", type=int, default=300)
    parser.add_argument("--hide-levels", type=int, nargs="*", default=[], metavar="LEVEL")
    args = parser.parse_args()
    dataset = ImageDataset(args.heldout)
    if len(dataset) < args.num:
        sys.exit(f"image_stats: {args.heldout} has {len(dataset)} images; --num asks for {args.num}")
    G, info = load_checkpoint(args.network)
    G = G.eval()
    if any(not 0 <= level < G.config.num_levels for level in args.hide_levels):
        sys.exit(f"image_stats: --hide-levels {args.hide_levels}: {args.network} has levels 0-{G.config.num_levels - 1}")
    if args.hide_levels:
        G = EditedGenerator(G, without_levels(args.hide_levels))
    print(f"{args.num} images   head coverage   head's mean R G B +- across images   "
          "head pixels by brightness, 0-0.1 ... 0.9-1   light pixels (share at the edge)   "
          "outline rings 1 and 2 px in (darkest channel)   faint pixels")
    real_mean, real_head = describe("held-out", real_images(dataset, range(args.num), info.resolution))
    fake_mean, _ = describe("generated", fake_images(G, dataset.labels[: args.num], info.resolution, 0, "cpu"))
    difference = fake_mean - real_mean  # [3, 16, 16]
    gap = difference.abs()
    print(f"mean image at 16 px, generated - held-out: mean |difference| {gap.mean():.4f}, largest {gap.max():.4f}")
    # Cells the held-out heads' outlines cross (head in 10-90 % of images): how much of the gap lies
    # there, and its sign (below 0: the generated heads are darker there, so they reach further out).
    outline = (real_head > 0.1) & (real_head < 0.9)
    print(f"  on the outline ({int(outline.sum())} of 256 cells): {gap[:, outline].sum() / gap.sum():.0%} of it, "
          f"mean difference {difference[:, outline].mean():+.4f} (elsewhere {difference[:, ~outline].mean():+.4f})")


if __name__ == "__main__":
    main()
