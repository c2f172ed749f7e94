"""Console scripts. Each `*_main` parses arguments, calls the library, and is the only place that
turns the library's typed errors into a message and an exit code."""

from __future__ import annotations

import sys

NOT_IMPLEMENTED_EXIT = 2


def _not_implemented(command: str, what: str) -> int:
    print(f"{command}: not implemented yet ({what} has not landed).", file=sys.stderr)
    return NOT_IMPLEMENTED_EXIT


def train_main(argv: list[str] | None = None) -> int:
    from gsgan_core.train.command import train_command

    return train_command(argv)


def dataset_main(argv: list[str] | None = None) -> int:
    from gsgan_core.data.command import dataset_command

    return dataset_command(argv)


def metrics_main(argv: list[str] | None = None) -> int:
    from gsgan_core.metrics.command import metrics_command

    return metrics_command(argv)


def import_main(argv: list[str] | None = None) -> int:
    from gsgan_core.io.official import import_command

    return import_command(argv)


def render_main(argv: list[str] | None = None) -> int:
    # The explorer's engine renders, so the command line and the GUI give the same frames.
    from explorer.commands import render_command

    return render_command(argv)


def export_main(argv: list[str] | None = None) -> int:
    from explorer.commands import export_command

    return export_command(argv)
