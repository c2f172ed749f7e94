"""`gsgan-train` / `python -m gsgan_core.train`: parse flags, train, turn typed errors into messages."""

from __future__ import annotations

import sys

from gsgan_core.errors import GsganError


def train_command(argv: list[str] | None = None) -> int:
    from gsgan_core.train.config import parse_args
    from gsgan_core.train.loop import train

    try:
        config = parse_args(argv)
        train(config)
    except GsganError as err:
        print(f"gsgan-train: {err}", file=sys.stderr)
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
