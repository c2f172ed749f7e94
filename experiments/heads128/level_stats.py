"""How each level of a generator draws: opacity and size of its Gaussians, in pixels of its own camera.

    python experiments/heads128/level_stats.py assets/heads128.safetensors [--seeds 0-7]

Per level, over the seeds (psi 1): the median opacity, the fractions above 0.1 and 0.5, and the
median of each Gaussian's longest, middle and shortest axis (one standard deviation, in pixels at
the checkpoint's default camera distance and field of view). A level whose Gaussians are mostly
faint adds colour on top of the coarser ones but cannot draw sharp edges of its own. The last
column: of the level's Gaussians above 0.05 opacity, the fraction whose colour (RGB = SH_C0 * sh_dc
+ 0.5, with no upper bound) lies outside [-0.1, 1.1] in some channel: strokes brighter than white
or darker than black (the rasterizer clamps colours at 0), which a faint opacity keeps in range.
"""

from __future__ import annotations

import argparse

import torch

from gsgan_core.cameras import intrinsics_from_fov
from gsgan_core.gaussians import SH_C0
from gsgan_core.io.checkpoint import load_checkpoint
from gsgan_core.models.generator import z_from_seeds


def parse_seeds(text: str) -> list[int]:
    """'0-7' or '0,3,5-6' -> the seeds."""
    seeds = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("network")
    parser.add_argument("--seeds", default="0-7")
    args = parser.parse_args()
    G, info = load_checkpoint(args.network)
    with torch.no_grad():
        gaussians = G.eval()(z_from_seeds(parse_seeds(args.seeds), G.config.z_dim))
    camera = info.camera
    focal = float(intrinsics_from_fov(camera.fov_deg)[0, 0])  # in image widths
    pixels_per_unit = focal * info.resolution / camera.radius
    opacity = torch.sigmoid(gaussians.opacity_logits)  # [B, N]
    axes = (gaussians.log_scales.exp() * pixels_per_unit).sort(dim=-1, descending=True).values  # [B, N, 3]
    rgb = SH_C0 * gaussians.sh_dc + 0.5  # [B, N, 3], before the rasterizer's clamp at 0
    outside = ((rgb < -0.1) | (rgb > 1.1)).any(dim=-1)  # [B, N]
    print(f"{args.network}: {info.resolution} px, {pixels_per_unit:.1f} px per unit at radius {camera.radius}")
    print("level      n  opacity median  >0.1  >0.5  axes px (median): longest  middle  shortest  "
          "RGB out of [-0.1, 1.1]")
    for level in range(G.config.num_levels):
        mask = gaussians.level == level
        o, a = opacity[:, mask], axes[:, mask]
        visible = o > 0.05
        out_of_range = (outside[:, mask] & visible).sum() / visible.sum().clamp_min(1)
        print(f"L{level}  {int(mask.sum()):7d}  {o.median():14.3f}  {(o > 0.1).float().mean():4.2f}  "
              f"{(o > 0.5).float().mean():4.2f}  {a[..., 0].median():24.2f}  {a[..., 1].median():6.2f}  "
              f"{a[..., 2].median():8.3f}  {out_of_range:22.2f}")


if __name__ == "__main__":
    main()
