"""What the demo's finest SWD band measures: is the generator too blurry or too noisy at 128 px?

    python scripts/demo/band_probe.py assets/heads128.safetensors HELDOUT.zip [--num 400]

HELDOUT.zip needs 2 x num images (`gsgan-dataset heads --count 1000 --resolution 128 --seed 1
--cameras orbit`). Prints SWD per band (finest first, x1e3) against the first num held-out images for:
the other num held-out images (the floor), the generator's images, those images sharpened (unsharp
mask), the held-out images blurred, and the generator's images rendered with supersampling. If
sharpening the fakes lowers the finest band and blurring the reals raises it towards the fakes',
the fakes lack fine detail rather than carry noise. About 20 minutes on 2 CPU cores at num 400.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gsgan_core.data.dataset import ImageDataset  # noqa: E402
from gsgan_core.io.checkpoint import load_checkpoint  # noqa: E402
from gsgan_core.metrics.command import fake_images, real_images  # noqa: E402
from gsgan_core.metrics.swd import sliced_wasserstein  # noqa: E402
from gsgan_core.train.losses import blur_images  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("network")
    parser.add_argument("heldout")
    parser.add_argument("--num", type=int, default=400)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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
        swd = sliced_wasserstein(reals_a, images.clamp(-1, 1), device=args.device)
        if name == "held-out vs held-out":  # the first row names the bands
            print(f"SWD x1e3 per band ({' / '.join(f'{r} px' for r in swd['resolutions'])}), {args.num} images")
        print(f"{name:28s}", " / ".join(f"{v:6.1f}" for v in swd["levels"]), flush=True)

    row("held-out vs held-out", reals_b)
    row("generated", fakes)
    for amount in (0.5, 1.0):
        row(f"generated, unsharp {amount}", fakes + amount * (fakes - blur_images(fakes, 0.7)))
    for sigma in (0.4, 0.6):
        row(f"held-out, blur {sigma} px", blur_images(reals_b, sigma))
    row("generated, supersample 2", fake_images(G, labels, R, 0, args.device, supersample=2))


if __name__ == "__main__":
    main()
