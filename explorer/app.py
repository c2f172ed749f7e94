"""`gsgan-explorer`: the desktop app for looking inside a trained generator."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("gsgan-explorer: not implemented yet (the explorer has not landed).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
