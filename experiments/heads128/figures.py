"""The demo checkpoint's figures in docs/, rendered by the explorer's own engine (so they match the app).

    python experiments/heads128/figures.py assets/heads128.safetensors --out docs

Writes three PNGs, every image at psi = 1 (no truncation) from the checkpoint's default camera orbit:
  demo-samples.png    4x4 seeds 0..15, each column from another yaw (-0.6, -0.2, 0.2, 0.6 rad)
  demo-turntable.png  seeds 0 and 1 (rows) from 8 yaws a full turn apart (0, 45, ..., 315 degrees)
  demo-levels.png     seed 0, column k = 0..L: level k alone (top row), levels 0..k together (bottom row)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np

from gsgan_core.view.engine import Engine
from gsgan_core.view.state import ExplorerState, LatentState, LevelState, RenderSettings
from gsgan_core.train.logger import write_png  # (atomic, like training's snapshot grids)


def render(engine: Engine, seed: int, yaw: float, resolution: int, level_mode: str = "all", level: int = 0) -> np.ndarray:
    state = ExplorerState(
        latent=LatentState(seed_a=seed, psi=1.0),
        levels=LevelState(mode=level_mode, level=level, background=True),
        camera=dataclasses.replace(engine.default_camera(), yaw=yaw),
        render=RenderSettings(resolution=resolution, background=(1.0, 1.0, 1.0)),
    )
    return engine.render_image(state)  # [R, R, 3] uint8


def grid(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Images [R, R, 3] in rows, with white gaps between them."""
    r = rows[0][0].shape[0]
    out = np.full((len(rows) * (r + gap) - gap, len(rows[0]) * (r + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            out[i * (r + gap) : i * (r + gap) + r, j * (r + gap) : j * (r + gap) + r] = image
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="docs", help="folder for the PNGs (default docs)")
    parser.add_argument("--resolution", type=int, default=0, help="pixels per image (default: the checkpoint's)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    engine = Engine(device)
    info = engine.load(args.checkpoint)
    resolution = args.resolution or info.resolution
    levels = engine.num_levels()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = 16 + 16 + 2 * levels
    with tqdm(total=jobs, desc="rendering figures", unit="img") as bar:
        def one(*a, **k):
            image = render(engine, *a, **k)
            bar.update()
            return image

        column_yaws = (-0.6, -0.2, 0.2, 0.6)
        samples = [[one(4 * row + col, column_yaws[col], resolution) for col in range(4)] for row in range(4)]
        turntable = [[one(seed, math.radians(45 * k), resolution) for k in range(8)] for seed in (0, 1)]
        build_up = [[one(0, 0.4, resolution, mode, k) for k in range(levels)] for mode in ("only", "up_to")]
    for name, image in (("demo-samples", grid(samples)), ("demo-turntable", grid(turntable)),
                        ("demo-levels", grid(build_up))):
        write_png(out / f"{name}.png", image)
        print(f"wrote {out / name}.png ({image.shape[1]}x{image.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
