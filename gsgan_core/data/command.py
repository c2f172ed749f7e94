"""`gsgan-dataset heads ...` (make the procedural heads dataset) and `gsgan-dataset check PATH`.

Errors are raised as typed errors; `gsgan_core.cli.console` prints them (exit status 2 for an --out that is
not a .zip or a --count/--resolution out of range, 1 otherwise).
"""

from __future__ import annotations

import argparse
import os

from gsgan_core.arguments import parse_number, parse_resolution, parse_seed
from gsgan_core.errors import ConfigError, OutputError, UsageError


def dataset_command(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gsgan-dataset", description="Make or check EG3D-format datasets.")
    commands = parser.add_subparsers(dest="command", required=True)
    heads = commands.add_parser("heads", help="render a procedural dataset of 3D heads (RGBA, EG3D labels)")
    heads.add_argument("--count", type=int, required=True, help="number of images")
    heads.add_argument("--resolution", type=int, required=True, help="image size in pixels (square)")
    heads.add_argument("--out", required=True, help="output .zip (an existing file is kept unless --force)")
    heads.add_argument("--force", action="store_true", help="replace --out if it exists")
    heads.add_argument("--seed", type=int, default=0, help="same seed, same dataset")
    heads.add_argument("--jobs", type=int, default=0, help="processes (0: every core)")
    heads.add_argument("--cameras", default="ffhq", choices=("ffhq", "orbit"),
                       help="ffhq: yaws near the frontal view, like FFHQ; orbit: any yaw around the head")
    check = commands.add_parser("check", help="validate a dataset folder or .zip (what training does first)")
    check.add_argument("path")
    args = parser.parse_args(argv)
    if args.command == "heads":
        return _heads(args)
    return _check(args.path)


def _heads(args) -> int:
    from gsgan_core.data.heads import make_heads_dataset
    from gsgan_core.io.atomic import writing

    if not args.out.endswith(".zip"):
        raise UsageError(f"--out must name a .zip file, got {args.out}")
    try:  # a size out of range is a usage error (status 2), like the --out above
        parse_number(args.count, "--count", 1, integer=True)
        parse_resolution(args.resolution)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    parse_seed(args.seed)
    if os.path.isdir(args.out):
        raise OutputError(args.out, "is a folder; give a .zip file name")
    if os.path.lexists(args.out) and not args.force:
        raise OutputError(args.out, "already exists; add --force to replace it")
    with writing(args.out):
        make_heads_dataset(args.out, args.count, args.resolution, args.seed, args.jobs or None, cameras=args.cameras)
    print(f"wrote {args.count} heads at {args.resolution}x{args.resolution} to {args.out}")
    return 0


def _check(path: str) -> int:
    from gsgan_core.data.dataset import check_dataset

    info = check_dataset(path, progress=True)  # DatasetError: the console prints it, exit status 1
    kind = "RGBA" if info.channels == 4 else "RGB"
    print(f"{info.path}: OK, {info.num_images} images, {info.resolution}x{info.resolution}, {kind}")
    return 0
