#!/usr/bin/env bash
# One chunk (under the lent GPU's 10-minute command limit) of training the demo checkpoint in assets/.
# See assets/README.md for the whole recipe. Run from the repository root on the GPU machine:
#
#   bash scripts/demo/train_chunk.sh MINUTES
#
# In:  .demo/state/part-*   the previous chunk's training state, in pieces (carried in); none = a new run,
#                            or with INIT_G=FILE one from that generator checkpoint and a new D (lib.sh)
# Out: $OUT/state/part-*     this chunk's training state, in pieces under the 16 MiB transfer limit
#      $OUT/network-fp16.safetensors, $OUT/log.jsonl, $OUT/fakes-latest.png
#      $OUT/gpu-monitor.csv   nvidia-smi every 30 s (clocks, throttling, utilisation, memory), to explain a slow chunk
#      $OUT/metrics.json          with EVAL=1: SWD of 5,000 generated vs 5,000 held-out images, the floor,
#                                 and each level's contribution
#
# Every GPU of the machine trains (torchrun, DDP). The dataset is rendered once per machine into
# $DEMO_TMP; it depends only on its seed, so every machine renders the same images.
set -euo pipefail
MINUTES=${1:?usage: train_chunk.sh MINUTES}
DEMO_TMP=${DEMO_TMP:-/tmp/gsgan-demo}
PRESET=${PRESET:-heads128}
RES=${RES:-128}
COUNT=${COUNT:-30000}           # training images (seed 0); the held-out set is seed 1
ANCHOR_FLOOR=${ANCHOR_FLOOR:-0.5}  # --g-anchor-floor-pixels: a guard since run 3 (run 4 = run 3 + equalised-lr layers)
R1_GAMMA=${R1_GAMMA:-40}        # --r1-gamma: run 4 used 1 (GSGAN's) to 707 kimg, 3 to 899, 10 to 4,547, 20 to 6,328, then 40 (assets/README.md)
LR_SCALE=${LR_SCALE:-0.04}      # both learning rates x this: run 4 used 1 to 1,232 kimg, 0.4 to 5,704, 0.1, then 0.04 (assets/README.md)
SUPERSAMPLE=${SUPERSAMPLE:-1}   # --render-supersample: 1 (2, switched on at 1,554 kimg, lost: assets/README.md)
D_BASE=${D_BASE:-32768}         # --d-channel-base and --d-channel-max: a resumed state must match them; run 4 used
D_MAX=${D_MAX:-160}             #   8192 and 128 to 2,246 kimg (NEW_D=1 starts a new D of this size for the state's G: lib.sh)
G_MODULATED=${G_MODULATED:-}    # --g-modulated: w-modulated levels, e.g. 1,1,1,1,1 (empty: the preset's, 0-2; lib.sh's train_demo)
EMA_KIMG=${EMA_KIMG:-40}        # --ema-kimg, G_ema's half-life: run 4 used 10 (GSGAN's, at batch 32) to 4,547 kimg, then 40
BATCH=${BATCH:-128}          # 32 per GPU on 4 GPUs: 630-700 img/s on H200 (64: about 500)
OUT=${OUT:?OUT must name the folder whose files come back}
NGPU=${NGPU:-$(python3 -c 'import torch; print(max(torch.cuda.device_count(), 1))')}
DATA=$DEMO_TMP/heads$RES-train.zip
RUN=$DEMO_TMP/run
source scripts/demo/lib.sh

mkdir -p "$DEMO_TMP" "$OUT/state"
pkill -f "[g]sgan_core[.]train" && sleep 3 || true  # a chunk cut off by the time limit leaves its workers behind
start_gpu_monitor
prepare_machine "$DATA" "$COUNT" "$RES"

# A fresh run folder every chunk: on a machine still warm from the last call it holds that chunk's
# log and snapshots, which would otherwise be sent back mixed with this one's.
rm -rf "$RUN"
if compgen -G ".demo/state/part-*" >/dev/null; then
    mkdir -p "$RUN"
    cat .demo/state/part-* >"$RUN/training-state.safetensors.tmp"
    mv "$RUN/training-state.safetensors.tmp" "$RUN/training-state.safetensors"
    echo "resuming from the carried state ($(du -h "$RUN/training-state.safetensors" | cut -f1))"
fi

train_demo "$NGPU" "$RUN" "$R1_GAMMA" "$MINUTES" "$DEMO_TMP/train-stdout.log" "$LR_SCALE" "$SUPERSAMPLE" \
    || { tail -c 4000 "$DEMO_TMP/train-stdout.log"; exit 1; }
tail -c 1500 "$DEMO_TMP/train-stdout.log" | tr '\r' '\n' | tail -n 4

send_back "$RUN"
cp "$RUN/log.jsonl" "$OUT/log.jsonl"
grep -E 'metrics/(swd|levels)' "$RUN/log.jsonl" | tail -n 6 || true
evaluate "$RUN/network-latest.safetensors"
ls -la "$OUT" "$OUT/state"
