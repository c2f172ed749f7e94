"""`gsgan-explorer [CKPT.safetensors] [--device cuda|cpu] [--resolution N]`: the desktop app.

With no checkpoint it opens the bundled demo (the first `assets/*.safetensors` beside the
package); until one exists it says so and opens an empty app that can open a file. Without a
display it explains how to run anyway (xvfb-run, or gsgan-render) instead of crashing in GLFW.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def demo_checkpoint(assets: Path = ASSETS) -> Path | None:
    """The bundled demo checkpoint, located relative to the package (not the working directory)."""
    found = sorted(assets.glob("*.safetensors")) if assets.is_dir() else []
    return found[0] if found else None


def display_problem(environ=os.environ, platform: str = sys.platform) -> str | None:
    """Why no window can open here, or None. Only X11/Wayland on Linux can be checked cheaply."""
    if not platform.startswith("linux"):
        return None
    if environ.get("WAYLAND_DISPLAY"):
        return None
    display = environ.get("DISPLAY", "")
    if not display:
        return "no display: DISPLAY is not set"
    host, _, number = display.partition(":")
    number = number.split(".")[0]
    if host in ("", "unix") and number.isdigit() and not Path(f"/tmp/.X11-unix/X{number}").exists():
        return f"no display: nothing listens on DISPLAY={display}"
    return None


def parser() -> argparse.ArgumentParser:
    from gsgan_core.arguments import add_device

    p = argparse.ArgumentParser(prog="gsgan-explorer", description="Look inside a trained gsgan generator.")
    p.add_argument("checkpoint", nargs="?",
                   help="generator checkpoint (.safetensors) or official GSGAN snapshot (.pkl); default: the bundled demo")
    add_device(p)
    p.add_argument("--resolution", type=int, default=None, help="render resolution (default 512 on GPU, 256 on CPU)")
    return p


NO_DISPLAY_HELP = (
    "  On a machine without a screen, run it in a virtual display:  xvfb-run -a gsgan-explorer ...\n"
    "  or render without a window:  gsgan-render CKPT --seeds 0-3 --out video.mp4"
)


def main(argv: list[str] | None = None) -> int:
    from gsgan_core.cli import console

    return console("gsgan-explorer", explore, argv)


def explore(argv: list[str] | None = None) -> int:
    """Parses the arguments, opens the window and runs it until it is closed."""
    args = parser().parse_args(argv)
    problem = display_problem()
    if problem:
        print(f"gsgan-explorer: {problem}, so no window can open.\n{NO_DISPLAY_HELP}", file=sys.stderr)
        return 1

    import torch

    from gsgan_core.arguments import parse_device, parse_resolution
    from gsgan_core.view.engine import interactive_engine
    from gsgan_core.view.state import ExplorerState, RenderSettings

    from .window import ExplorerApp

    device = parse_device(args.device)
    resolution = parse_resolution(args.resolution or (512 if device.type == "cuda" else 256))
    path = args.checkpoint or demo_checkpoint()
    status = ""
    if path is None:
        status = f"No checkpoint given and no demo checkpoint in {ASSETS} yet: open a .safetensors file (Checkpoint panel)."
        print(f"gsgan-explorer: {status}", file=sys.stderr)
    app = ExplorerApp(interactive_engine(device), ExplorerState(render=RenderSettings(resolution=resolution)), status)
    app.build()
    if path is not None and not app.load(str(path)):
        print(f"gsgan-explorer: {app.status}", file=sys.stderr)
    torch.set_grad_enabled(False)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
