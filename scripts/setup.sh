#!/usr/bin/env bash
# Idempotent set-up of everything gsgan needs, into ./.venv:
#   - torch: the CPU build on machines without an NVIDIA GPU (never gigabytes of CUDA wheels there),
#     the default (CUDA) build where `nvidia-smi` sees a GPU; an already-installed torch is kept;
#   - this package (editable) with its `dev` extra, and its `cuda` extra (gsplat) on GPU machines;
#   - Xvfb (Debian package `xvfb`) when asked with --xvfb, for the GUI tests on a machine with no display.
set -euo pipefail
cd "$(dirname "$0")/.."

want_xvfb=0
for arg in "$@"; do
  case "$arg" in
    --xvfb) want_xvfb=1 ;;
    *) echo "setup.sh: unknown option '$arg' (known: --xvfb)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
VPY=.venv/bin/python
pip_install() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if has_gpu; then
    echo "[setup] NVIDIA GPU found: installing torch (CUDA build)"
    pip_install torch
  else
    echo "[setup] no NVIDIA GPU: installing the CPU build of torch"
    # A machine with a local wheel cache (pip's find-links) has the +cpu build; elsewhere use
    # PyTorch's CPU index. Either way no CUDA packages are downloaded.
    pip_install "torch==2.13.0+cpu" 2>/dev/null ||
      pip_install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

extras=dev
has_gpu && extras=dev,cuda
# Re-installing is cheap when nothing changed; a stamp keeps repeated runs fast.
stamp=.venv/.gsgan-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing gsgan[$extras] into .venv"
  pip_install -e ".[$extras]"
  touch "$stamp"
fi

if [ "$want_xvfb" = 1 ] && ! command -v Xvfb >/dev/null 2>&1; then
  echo "[setup] installing Xvfb (Debian package xvfb)"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq xvfb >/dev/null
fi
echo "[setup] ready: $("$VPY" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
