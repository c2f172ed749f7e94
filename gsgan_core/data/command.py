"""`gsgan-dataset heads ...` (make the procedural heads dataset) and `gsgan-dataset check PATH`."""

from __future__ import annotations

import argparse
import os
import sys

from gsgan_core.errors import DatasetError


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
        from gsgan_core.data.heads import make_heads_dataset

        if not args.out.endswith(".zip"):
            print(f"gsgan-dataset heads: --out must name a .zip file, got {args.out}", file=sys.stderr)
            return 2
        if args.count < 1 or args.resolution < 8:
            print("gsgan-dataset heads: --count must be >= 1 and --resolution >= 8", file=sys.stderr)
            return 2
        if os.path.isdir(args.out):
            print(f"gsgan-dataset heads: {args.out}: is a folder; give a .zip file name", file=sys.stderr)
            return 1
        if os.path.lexists(args.out) and not args.force:
            print(f"gsgan-dataset heads: {args.out}: already exists; add --force to replace it", file=sys.stderr)
            return 1
        try:
            make_heads_dataset(args.out, args.count, args.resolution, args.seed, args.jobs or None, cameras=args.cameras)
        except OSError as err:
            print(f"gsgan-dataset heads: cannot write {args.out}: {err}", file=sys.stderr)
            return 1
        print(f"wrote {args.count} heads at {args.resolution}x{args.resolution} to {args.out}")
        return 0

    from gsgan_core.data.dataset import check_dataset

    try:
        info = check_dataset(args.path, progress=True)
    except DatasetError as err:
        print(f"gsgan-dataset check: {err}", file=sys.stderr)
        return 1
    kind = "RGBA" if info.channels == 4 else "RGB"
    print(f"{info.path}: OK, {info.num_images} images, {info.resolution}x{info.resolution}, {kind}")
    return 0
