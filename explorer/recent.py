"""The recent-files list of the Checkpoint panel, kept in $XDG_CONFIG_HOME/gsgan/recent.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gsgan_core.io.atomic import atomic_write_bytes

MAX_RECENT = 8


def recent_files_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gsgan" / "recent.json"


class RecentFiles:
    def __init__(self, path: Path | None = None):
        self.path = path or recent_files_path()
        self.items = self._read()

    def _read(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text())
            return [str(p) for p in data if isinstance(p, str)][:MAX_RECENT]
        except (OSError, ValueError):
            return []  # no list yet, or an unreadable one: start a new one

    def add(self, path: str) -> str | None:
        """Puts `path` (made absolute) first and saves the list; returns why saving failed, if it did."""
        absolute = str(Path(path).resolve())
        self.items = [absolute] + [p for p in self.items if p != absolute][: MAX_RECENT - 1]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps(self.items, indent=1).encode())
        except OSError as err:  # a read-only home is no reason to stop exploring
            return f"could not save the recent-files list: {err}"
        return None
