"""`gsgan-train` / `python -m gsgan_core.train`: parse the flags (ConfigError, before any work), train.

Typed errors become a one-line message and exit status 1 in `gsgan_core.cli.console`.
"""

from __future__ import annotations


def train_command(argv: list[str] | None = None) -> int:
    from gsgan_core.train.config import parse_args
    from gsgan_core.train.loop import train

    try:
        train(parse_args(argv))
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
