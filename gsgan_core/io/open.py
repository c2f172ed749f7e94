"""One entry point for every generator file gsgan opens: its own checkpoints and official snapshots."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gsgan_core.errors import CheckpointError
from gsgan_core.io.checkpoint import CheckpointInfo, load_checkpoint
from gsgan_core.io.official import load_official_snapshot

PICKLE_SUFFIXES = (".pkl", ".pickle")


def is_official_snapshot(path: str | os.PathLike) -> bool:
    """A pickle by name or by its first bytes (protocol 2+ starts with 0x80, then the version)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def load_generator(
    path: str | os.PathLike, device: torch.device | str = "cpu", which: str = "G_ema"
) -> tuple[nn.Module, CheckpointInfo]:
    """A gsgan checkpoint (.safetensors), or an official GSGAN snapshot (.pkl) imported in memory,
    read without running anything in it. `info.training["imported_from"]` is set for the latter."""
    path = CheckpointError.check_file(path, "a generator file")
    if is_official_snapshot(path):
        return load_official_snapshot(path, which, device)
    return load_checkpoint(path, device)


def import_note(info: CheckpointInfo) -> str | None:
    """The one line the CLI and the GUI show for an imported snapshot (None for gsgan files)."""
    source = info.training.get("imported_from")
    if source is None:
        return None
    return (f"note: {source} is an official GSGAN snapshot; its {info.training.get('network', 'G_ema')} was imported "
            f"in memory (nothing in the pickle ran); gsgan-import converts it to .safetensors once")
