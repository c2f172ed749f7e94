#!/usr/bin/env bash
# Set-up (idempotent), then the explorer. Arguments go to gsgan-explorer (default: the demo checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/gsgan-explorer "$@"
