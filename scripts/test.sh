#!/usr/bin/env bash
# Set-up (idempotent) and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --xvfb
exec .venv/bin/python -m pytest -q -ra "$@"
