"""Console scripts: the top layer. Each `*_main` hands its arguments to a command further down
and runs it through `console`, the one place where the library's typed errors become a one-line
message and an exit status. Nothing in the package imports this module; the commands import
their shared argument readers from `gsgan_core.arguments`.
"""

from __future__ import annotations

import sys
from typing import Callable

from gsgan_core.errors import GsganError, UsageError

ERROR_EXIT = 1
USAGE_EXIT = 2  # argparse's status for a command line it refuses

Command = Callable[[list[str] | None], int | None]


def console(prog: str, command: Command, argv: list[str] | None = None) -> int:
    """Runs `command(argv)`; a GsganError becomes "prog: error: message" on stderr and exit status 1
    (2 for a UsageError, as argparse gives)."""
    try:
        status = command(argv)
    except GsganError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return USAGE_EXIT if isinstance(err, UsageError) else ERROR_EXIT
    return 0 if status is None else int(status)


def train_main(argv: list[str] | None = None) -> int:
    from gsgan_core.train.command import train_command

    return console("gsgan-train", train_command, argv)


def dataset_main(argv: list[str] | None = None) -> int:
    from gsgan_core.data.command import dataset_command

    return console("gsgan-dataset", dataset_command, argv)


def metrics_main(argv: list[str] | None = None) -> int:
    from gsgan_core.metrics.command import metrics_command

    return console("gsgan-metrics", metrics_command, argv)


def import_main(argv: list[str] | None = None) -> int:
    from gsgan_core.io.official import import_command

    return console("gsgan-import", import_command, argv)


def render_main(argv: list[str] | None = None) -> int:
    from gsgan_core.view.commands import render_command

    return console("gsgan-render", render_command, argv)


def export_main(argv: list[str] | None = None) -> int:
    from gsgan_core.view.commands import export_command

    return console("gsgan-export", export_command, argv)


def invert_main(argv: list[str] | None = None) -> int:
    from gsgan_core.invert.command import invert_command

    return console("gsgan-invert", invert_command, argv)
