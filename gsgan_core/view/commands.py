"""`gsgan-render` and `gsgan-export`: the viewer's engine without a window.

`gsgan_core.cli.render_main` / `export_main` run these. They build the same `ExplorerState`
the explorer edits and render it with the same `Engine` and `record`, so a command-line video
is frame for frame what the explorer records. Errors are raised as typed errors; the console
wrapper in `gsgan_core.cli` prints them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gsgan_core.arguments import (PITCH_LIMIT, add_background, add_device, add_fps, add_psi, parse_colour, parse_device,
                                  parse_fps, parse_int_list, parse_number, parse_psi, parse_resolution, parse_seed,
                                  print_import_note)
from gsgan_core.errors import CheckpointError, ConfigError
from gsgan_core.io.atomic import removing_temporaries_on_signals, writing

from .state import RENDER_MODES, TRAJECTORIES, ExplorerState, LatentState, RenderSettings

CHECKPOINT_HELP = "generator checkpoint (.safetensors) or official GSGAN snapshot (.pkl)"


def _open_engine(checkpoint: str, device: str, prog: str):
    """The interactive engine on `device` with `checkpoint` loaded; the import note on stderr."""
    from .engine import interactive_engine

    path = CheckpointError.check_file(checkpoint, "a generator file")  # before the engine starts
    if not path.is_file():
        raise CheckpointError(path, "is not a regular file")
    engine = interactive_engine(parse_device(device))
    print_import_note(prog, engine.load(checkpoint))
    return engine


# --------------------------------------------------------------------------- gsgan-render
def render_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gsgan-render",
        description="Render videos or stills of a generator checkpoint (the explorer's engine, no window).",
    )
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-3 or 1,5,9 (default 0)")
    p.add_argument("--trajectory", default="turntable", choices=TRAJECTORIES,
                   help="turntable: 360 degrees of yaw; wobble: EG3D yaw/pitch swing; interp: W-space path through the seeds")
    p.add_argument("--frames", type=int, default=120)
    add_fps(p)
    p.add_argument("--resolution", type=int, default=512)
    add_psi(p)
    p.add_argument("--pitch", type=float, default=None,
                   help="turntable elevation in radians, within +-1.55 (89 degrees) (default: the checkpoint's)")
    p.add_argument("--mode", default="rgb", choices=RENDER_MODES)
    add_background(p)
    p.add_argument("--grid", action="store_true", help="all seeds side by side in one video")
    add_device(p)
    p.add_argument("--out", required=True, help=".mp4 (H.264), .gif, or .png (a still, or numbered frames)")
    return p


def render_command(argv: list[str] | None = None) -> int:
    args = render_parser().parse_args(argv)
    seeds = parse_int_list(args.seeds, "seed")
    _check_render_args(args, seeds)
    with removing_temporaries_on_signals("gsgan-render"):  # SIGTERM/SIGINT: stop, leave no temporaries
        return _render(args, seeds)


def _render(args, seeds: list[int]) -> int:
    from tqdm import tqdm

    from .recording import record
    from .video import VIDEO_SUFFIXES, check_output

    out = check_output(args.out, VIDEO_SUFFIXES)  # fail before the slow parts
    engine = _open_engine(args.checkpoint, args.device, "gsgan-render")
    base = ExplorerState(
        latent=LatentState(psi=args.psi),
        camera=engine.default_camera(),
        render=RenderSettings(resolution=args.resolution, mode=args.mode, background=parse_colour(args.background)),
    )
    print(f"gsgan-render: {args.checkpoint} on {engine.device_name()} ({engine.backend_name()})", file=sys.stderr)
    for path, frames in _render_jobs(args, base, seeds, out):
        with tqdm(total=len(frames), desc=Path(path).name, unit="frame", file=sys.stderr) as bar:
            written = record(engine, frames, path, args.fps, progress=lambda done, total: bar.update(done - bar.n))
        shown = written[0] if len(written) == 1 else f"{written[0]} .. {written[-1]} ({len(written)} files)"
        print(f"gsgan-render: wrote {shown}")
    return 0


def _check_render_args(args, seeds: list[int]) -> None:
    parse_number(args.frames, "--frames", 1, integer=True)  # (argparse reads "--frames=--" as [])
    parse_fps(args.fps)
    parse_psi(args.psi)
    if args.pitch is not None:
        parse_number(args.pitch, "--pitch", -PITCH_LIMIT, PITCH_LIMIT)
    parse_resolution(args.resolution)
    if args.trajectory == "interp" and len(seeds) < 2:
        raise ConfigError("--trajectory interp needs at least two seeds, e.g. --seeds 0-3")
    if args.trajectory == "interp" and args.grid:
        raise ConfigError("--grid shows seeds side by side; --trajectory interp already walks through them")


def _render_jobs(args, base: ExplorerState, seeds: list[int], out: Path) -> list[tuple[Path, list[list[ExplorerState]]]]:
    """(output path, [frame][tile] states) per file to write."""
    from .recording import trajectory, with_seed

    if args.trajectory == "interp":
        return [(out, [[s] for s in trajectory(base, "interp", args.frames, seeds=seeds)])]
    path_states = trajectory(base, args.trajectory, args.frames, pitch=args.pitch)
    if args.grid or len(seeds) == 1:
        return [(out, [[with_seed(s, seed) for seed in seeds] for s in path_states])]
    return [(_per_seed_path(out, seed), [[with_seed(s, seed)] for s in path_states]) for seed in seeds]


def _per_seed_path(out: Path, seed: int) -> Path:
    return out.with_name(f"{out.stem}-seed{seed:04d}{out.suffix}")


# --------------------------------------------------------------------------- gsgan-export
def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gsgan-export", description="Export one generated head as a 3DGS PLY file.")
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--seed", type=int, default=0)
    add_psi(p)
    p.add_argument("--levels", default="all", help="hierarchy levels to keep: all (default), 0-2, or 0,3")
    p.add_argument("--no-background", action="store_true", help="leave the background Gaussians out")
    add_device(p)
    p.add_argument("--out", required=True, help="output .ply")
    return p


def export_command(argv: list[str] | None = None) -> int:
    args = export_parser().parse_args(argv)
    parse_seed(args.seed)
    parse_psi(args.psi)
    levels = None if args.levels.strip().lower() == "all" else parse_int_list(args.levels, "level")
    with removing_temporaries_on_signals("gsgan-export"):  # SIGTERM/SIGINT: stop, leave no temporaries
        return _export(args, levels)


def _export(args, levels: list[int] | None) -> int:
    from gsgan_core.io.ply import write_ply

    from .edits import keep_levels
    from .video import check_output

    out = check_output(args.out, (".ply",))
    engine = _open_engine(args.checkpoint, args.device, "gsgan-export")
    if levels is not None and max(levels) >= engine.num_levels():
        raise ConfigError(f"--levels {args.levels}: this generator has levels 0..{engine.num_levels() - 1}")
    gaussians = engine.gaussians(LatentState(seed_a=args.seed, psi=args.psi))
    selected = keep_levels(gaussians, levels, background=not args.no_background).to("cpu")
    with writing(out):
        write_ply(out, selected)
    counts = ", ".join(f"{'bg' if k < 0 else f'L{k}'}={v}" for k, v in sorted(selected.count_per_level().items()))
    print(f"gsgan-export: wrote {out} ({selected.num_gaussians} Gaussians: {counts})")
    return 0
