"""Command-line values that several console scripts read, each read in one place: the device,
lists of integers (seeds, levels), frame resolutions, and every numeric flag's range (`parse_number`;
NaN and infinities never pass). Each raises ConfigError naming what is
wrong; `gsgan_core.cli.console` turns that into a one-line message and exit status 1.

Choices (trajectories, render modes) come from the constants in `gsgan_core.view.state`, which
the GUI's widgets read as well. Flags that several commands take are defined here too (`add_device`,
`add_psi`, `add_fps`, `add_background`), as is the note a command prints for an imported snapshot.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING

from gsgan_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from gsgan_core.io.checkpoint import CheckpointInfo

MAX_LIST = 10_000  # more seeds than this in one command is a typo, not a plan
MAX_SEED = 2**32 - 1
# Ranges of the numeric flags shared by gsgan-render, gsgan-export and gsgan-metrics.
PSI_RANGE = (-1.0, 2.0)  # truncation: 1 = none, 0 = the average w; outside [0, 1] extrapolates
PITCH_LIMIT = math.radians(89)  # turntable elevation, radians: at +-90 degrees the camera's "up" is undefined
FPS_RANGE = (0.0, 1000.0)  # (exclusive, inclusive]
DEVICE_HELP = "cuda, cpu or auto (default: cuda when available)"


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_psi(parser: argparse.ArgumentParser, default: float = 0.7) -> None:
    """--psi, read with parse_psi."""
    low, high = PSI_RANGE
    parser.add_argument("--psi", type=float, default=default,
                        help=f"truncation (1 = none, 0 = the average; {low:g}..{high:g})")


def add_fps(parser: argparse.ArgumentParser, default: float = 30.0) -> None:
    """--fps, read with parse_fps."""
    parser.add_argument("--fps", type=float, default=default,
                        help=f"frames per second, in (0, {FPS_RANGE[1]:g}] (default {default:g})")


def add_background(parser: argparse.ArgumentParser, what: str = "") -> None:
    """--background "r,g,b", read with parse_colour; `what` says what it is behind."""
    parser.add_argument("--background", default="1,1,1",
                        help=f"r,g,b in [0, 1]{': ' + what if what else ''} (default white)")


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
    if any(v < 0 or v > MAX_SEED for v in values):
        raise ConfigError(f"{what} must be in 0..{MAX_SEED}, got {text!r}")
    return values


def parse_resolution(value: int, flag: str = "--resolution") -> int:
    """A frame size within the renderer's limits (`view.state.RESOLUTION_RANGE`)."""
    from gsgan_core.view.state import check_resolution

    return check_resolution(parse_number(value, flag, integer=True), flag)


def parse_colour(text: str, flag: str = "--background") -> tuple[float, float, float]:
    """"r,g,b" with each in [0, 1]."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 1 for v in values):
        raise ConfigError(f"{flag} must be three numbers in [0, 1] like 1,1,1, got {text!r}")
    return values  # type: ignore[return-value]


def parse_number(value, flag: str, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, integer: bool = False) -> float | int:
    """`value` as a finite number in [low, high] (or (low, high] with `low_open`); with `integer`, a whole
    number. ConfigError naming `flag` otherwise: NaN and infinities are refused, whatever the range."""
    if integer and isinstance(value, int) and not isinstance(value, bool):
        result = value
    else:
        try:
            result = float(value)
        except (TypeError, ValueError, OverflowError):
            result = math.nan
        if not math.isfinite(result) or (integer and result != int(result)):
            raise ConfigError(f"{flag} must be {'a whole' if integer else 'a finite'} number, got {_shown(value)}")
        result = int(result) if integer else result
    below = low is not None and (result <= low if low_open else result < low)
    if below or (high is not None and result > high):
        if low is not None and high is not None:
            wanted = f"in {'(' if low_open else '['}{_plain(low)}, {_plain(high)}]"
        elif low is not None:
            wanted = f"{'above' if low_open else 'at least'} {_plain(low)}"
        else:
            wanted = f"at most {_plain(high)}"
        raise ConfigError(f"{flag} must be {wanted}, got {_shown(value)}")
    return result


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _plain(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def parse_psi(value: float, flag: str = "--psi") -> float:
    return parse_number(value, flag, *PSI_RANGE)


def parse_fps(value: float, flag: str = "--fps") -> float:
    return parse_number(value, flag, *FPS_RANGE, low_open=True)


def parse_seed(value: int, flag: str = "--seed") -> int:
    return parse_number(value, flag, 0, MAX_SEED, integer=True)


def print_import_note(prog: str, info: CheckpointInfo) -> None:
    """"prog: note: ..." on stderr when `info` is of an official snapshot imported in memory (`io.open.import_note`)."""
    from gsgan_core.io.open import import_note

    note = import_note(info)
    if note:
        print(f"{prog}: {note}", file=sys.stderr)
