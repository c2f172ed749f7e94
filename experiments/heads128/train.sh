#!/usr/bin/env bash
# Trains the demo checkpoint's recipe (assets/heads128.safetensors) on every GPU of the machine
# (torchrun, DDP), into RUN, resuming from RUN's training state when it has one. Run from the
# repository root with the package installed:
#
#   [KIMG=6444] [MINUTES=0] [R1_GAMMA=40] [LR_SCALE=0.04] ... bash experiments/heads128/train.sh
#
# It stops at KIMG total kimg (or after MINUTES, with a final snapshot), so one run can be trained
# in stages with different settings: README.md lists the stages of the shipped file.
#
# Writes into RUN (default out/heads128/run): gsgan-train's snapshots, training state and
# log.jsonl; network-fp16.safetensors (the latest generator in the shipped form);
# gpu-monitor.csv (nvidia-smi every 30 s); with EVAL=1, metrics.json: SWD of 5,000 generated vs
# 5,000 held-out images, the floor, and each level's share. Datasets go to DEMO_DIR (default
# out/heads128) and are rendered once.
set -euo pipefail
here=$(dirname "$0")
source "$here/lib.sh"
RUN=${RUN:-$DEMO_DIR/run}
NGPU=${NGPU:-$(python3 -c 'import torch; print(max(torch.cuda.device_count(), 1))')}

mkdir -p "$RUN"
start_gpu_monitor "$RUN/gpu-monitor.csv"
prepare_machine
[ -f "$RUN/training-state.safetensors" ] && echo "resuming from $RUN/training-state.safetensors"

train_demo "$NGPU" "$RUN" "$RUN/train-stdout.log" || { tail -c 4000 "$RUN/train-stdout.log"; exit 1; }
tail -c 1500 "$RUN/train-stdout.log" | tr '\r' '\n' | tail -n 4

export_fp16 "$RUN"
grep -E 'metrics/(swd|levels)' "$RUN/log.jsonl" | tail -n 6 || true
if [ "${EVAL:-0}" = 1 ]; then
    evaluate "$RUN/network-latest.safetensors" "$RUN/metrics.json"
fi
