"""Command-line values that several console scripts read, each read in one place: the device,
lists of integers (seeds, levels) and frame resolutions. Each raises ConfigError naming what is
wrong; `gsgan_core.cli.console` turns that into a one-line message and exit status 1.

Choices (trajectories, render modes) come from the constants in `gsgan_core.view.state`, which
the GUI's widgets read as well.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gsgan_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

MAX_LIST = 10_000  # more seeds than this in one command is a typo, not a plan
DEVICE_HELP = "cuda, cpu or auto (default: cuda when available)"


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def parse_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda..." only where CUDA is; any torch device name."""
    import torch  # here, so that `--help` and the explorer's no-display message need no torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected {DEVICE_HELP.split(' (')[0]}") from None


def parse_int_list(text: str, what: str) -> list[int]:
    """"0-3,7" -> [0, 1, 2, 3, 7]. Raises ConfigError for anything else."""
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


def parse_resolution(value: int, flag: str = "--resolution") -> int:
    """A frame size within the renderer's limits (`view.state.RESOLUTION_RANGE`)."""
    from gsgan_core.view.state import check_resolution

    return check_resolution(value, flag)


def parse_colour(text: str, flag: str = "--background") -> tuple[float, float, float]:
    """"r,g,b" with each in [0, 1]."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 1 for v in values):
        raise ConfigError(f"{flag} must be three numbers in [0, 1] like 1,1,1, got {text!r}")
    return values  # type: ignore[return-value]
