"""`gsgan-render` and `gsgan-export`: the explorer's engine without a window.

`gsgan_core.cli.render_main` / `export_main` call these. They build the same `ExplorerState`
the GUI edits and render it with the same `Engine` and `record`, so a command-line video is
frame for frame what the explorer records. Library errors become one-line messages here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from gsgan_core.errors import GsganError

ERROR_EXIT = 1
MAX_LIST = 10_000  # more seeds than this in one command is a typo, not a plan


def parse_int_list(text: str, what: str) -> list[int]:
    """"0-3,7" -> [0, 1, 2, 3, 7]. Raises ConfigError for anything else."""
    from gsgan_core.errors import ConfigError

    values: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        lo_text, dash, hi_text = part.partition("-")
        try:  # "-3" and "1-" fail here: seeds and levels are never negative
            lo, hi = int(lo_text), int(hi_text if dash else lo_text)
        except ValueError:  # (ConfigError is a ValueError too, so nothing else may raise in here)
            raise ConfigError(f"bad {what} {part!r} in {text!r}: expected numbers like 0-3,7") from None
        if hi < lo:
            raise ConfigError(f"bad {what} range {part!r}: the end {hi} is below the start {lo}")
        if hi - lo >= MAX_LIST:
            raise ConfigError(f"{what} range {part!r} is too long (at most {MAX_LIST})")
        values.extend(range(lo, hi + 1))
    if not values:
        raise ConfigError(f"no {what} given")
    if any(v < 0 or v >= 2**32 for v in values):
        raise ConfigError(f"{what} must be in 0..{2**32 - 1}, got {text!r}")
    return values


def _device(name: str) -> torch.device:
    from gsgan_core.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return torch.device(name)


def interactive_engine(device: torch.device):
    """The engine as the explorer and the commands use it: on CUDA with TF32 matmuls and the
    synthesis replayed as a CUDA graph (see docs/BENCHMARKS.md, explorer section)."""
    from .engine import Engine

    cuda = device.type == "cuda"
    return Engine(device, precision="tf32" if cuda else "fp32", cuda_graph=cuda)


def _background(text: str) -> tuple[float, float, float]:
    from gsgan_core.errors import ConfigError

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 1 for v in values):
        raise ConfigError(f"--background must be three numbers in [0, 1] like 1,1,1, got {text!r}")
    return values  # type: ignore[return-value]


def _per_seed_path(out: Path, seed: int) -> Path:
    return out.with_name(f"{out.stem}-seed{seed:04d}{out.suffix}")


# --------------------------------------------------------------------------- gsgan-render
def render_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gsgan-render",
        description="Render videos or stills of a generator checkpoint (the explorer's engine, no window).",
    )
    p.add_argument("checkpoint", help="generator checkpoint (.safetensors) or official GSGAN snapshot (.pkl)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-3 or 1,5,9 (default 0)")
    p.add_argument("--trajectory", default="turntable", choices=("turntable", "wobble", "interp"),
                   help="turntable: 360 degrees of yaw; wobble: EG3D yaw/pitch swing; interp: W-space path through the seeds")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--psi", type=float, default=0.7, help="truncation (1 = none)")
    p.add_argument("--pitch", type=float, default=None, help="turntable elevation in radians (default: the checkpoint's)")
    p.add_argument("--mode", default="rgb", choices=("rgb", "depth", "alpha", "levels"))
    p.add_argument("--background", default="1,1,1", help="r,g,b in [0, 1] (default white)")
    p.add_argument("--grid", action="store_true", help="all seeds side by side in one video")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument("--out", required=True, help=".mp4 (H.264), .gif, or .png (a still, or numbered frames)")
    return p


def render_command(argv: list[str] | None = None) -> int:
    args = render_parser().parse_args(argv)
    try:
        return _render(args)
    except GsganError as err:
        print(f"gsgan-render: error: {err}", file=sys.stderr)
        return ERROR_EXIT


def _render(args) -> int:
    from tqdm import tqdm

    from gsgan_core.errors import CheckpointError, ConfigError

    from .recording import record, trajectory, with_seed
    from .state import ExplorerState
    from .video import VIDEO_SUFFIXES, check_output

    seeds = parse_int_list(args.seeds, "seed")
    if args.frames < 1:
        raise ConfigError(f"--frames must be at least 1, got {args.frames}")
    if args.fps <= 0:
        raise ConfigError(f"--fps must be positive, got {args.fps}")
    if not 8 <= args.resolution <= 4096:
        raise ConfigError(f"--resolution must be between 8 and 4096, got {args.resolution}")
    if args.trajectory == "interp" and len(seeds) < 2:
        raise ConfigError("--trajectory interp needs at least two seeds, e.g. --seeds 0-3")
    if args.trajectory == "interp" and args.grid:
        raise ConfigError("--grid shows seeds side by side; --trajectory interp already walks through them")
    out = check_output(args.out, VIDEO_SUFFIXES)  # fail before the slow parts
    if not Path(args.checkpoint).is_file():
        raise CheckpointError(args.checkpoint, "no such file")

    engine = interactive_engine(_device(args.device))
    _note_import(engine.load(args.checkpoint), "gsgan-render")
    base = ExplorerState(checkpoint=args.checkpoint)
    base.camera = engine.default_camera()
    base.latent.psi = args.psi
    base.render.resolution = args.resolution
    base.render.mode = args.mode
    base.render.background = _background(args.background)
    print(f"gsgan-render: {args.checkpoint} on {engine.device_name()} ({engine.backend_name()})", file=sys.stderr)

    # jobs: (output path, [frame][tile] states)
    if args.trajectory == "interp":
        jobs = [(out, [[s] for s in trajectory(base, "interp", args.frames, seeds=seeds)])]
    elif args.grid or len(seeds) == 1:
        path_states = trajectory(base, args.trajectory, args.frames, pitch=args.pitch)
        jobs = [(out, [[with_seed(s, seed) for seed in seeds] for s in path_states])]
    else:
        path_states = trajectory(base, args.trajectory, args.frames, pitch=args.pitch)
        jobs = [(_per_seed_path(out, seed), [[with_seed(s, seed)] for s in path_states]) for seed in seeds]

    for path, frames in jobs:
        with tqdm(total=len(frames), desc=Path(path).name, unit="frame", file=sys.stderr) as bar:
            written = record(engine, frames, path, args.fps, progress=lambda done, total: bar.update(done - bar.n))
        shown = written[0] if len(written) == 1 else f"{written[0]} .. {written[-1]} ({len(written)} files)"
        print(f"gsgan-render: wrote {shown}")
    return 0


def _note_import(info, command: str) -> None:
    from gsgan_core.io.open import import_note

    note = import_note(info)
    if note:
        print(f"{command}: {note}", file=sys.stderr)


# --------------------------------------------------------------------------- gsgan-export
def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gsgan-export", description="Export one generated head as a 3DGS PLY file.")
    p.add_argument("checkpoint", help="generator checkpoint (.safetensors) or official GSGAN snapshot (.pkl)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--psi", type=float, default=0.7, help="truncation (1 = none)")
    p.add_argument("--levels", default="all", help="hierarchy levels to keep: all (default), 0-2, or 0,3")
    p.add_argument("--no-background", action="store_true", help="leave the background Gaussians out")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument("--out", required=True, help="output .ply")
    return p


def export_command(argv: list[str] | None = None) -> int:
    args = export_parser().parse_args(argv)
    try:
        return _export(args)
    except GsganError as err:
        print(f"gsgan-export: error: {err}", file=sys.stderr)
        return ERROR_EXIT


def _export(args) -> int:
    from gsgan_core.errors import CheckpointError, ConfigError
    from gsgan_core.io.ply import write_ply

    from .engine import keep_levels
    from .state import LatentState
    from .video import check_output

    out = check_output(args.out, (".ply",))
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    levels = None if args.levels.strip().lower() == "all" else parse_int_list(args.levels, "level")
    if not Path(args.checkpoint).is_file():
        raise CheckpointError(args.checkpoint, "no such file")
    engine = interactive_engine(_device(args.device))
    _note_import(engine.load(args.checkpoint), "gsgan-export")
    if levels is not None and max(levels) >= engine.num_levels():
        raise ConfigError(f"--levels {args.levels}: this generator has levels 0..{engine.num_levels() - 1}")
    gaussians = engine.gaussians(LatentState(seed_a=args.seed, psi=args.psi))
    selected = keep_levels(gaussians, levels, background=not args.no_background).to("cpu")
    try:
        write_ply(out, selected)
    except OSError as err:
        raise ConfigError(f"{out}: cannot write: {err.strerror or err}") from None
    counts = ", ".join(f"{'bg' if k < 0 else f'L{k}'}={v}" for k, v in sorted(selected.count_per_level().items()))
    print(f"gsgan-export: wrote {out} ({selected.num_gaussians} Gaussians: {counts})")
    return 0
