#!/usr/bin/env bash
# One chunk (under the lent GPU's 10-minute command limit) of training the demo checkpoint in assets/.
# See assets/README.md for the whole recipe. Run from the repository root on the GPU machine:
#
#   bash scripts/demo/train_chunk.sh MINUTES
#
# In:  .demo/state/part-*   the previous chunk's training state, in pieces (carried in); none = a new run
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
R1_GAMMA=${R1_GAMMA:-10}        # --r1-gamma: run 4 used 1 (GSGAN's) to 707 kimg, 3 to 899, then 10 (assets/README.md)
BATCH=${BATCH:-128}          # 32 per GPU on 4 GPUs: 630-700 img/s on H200 (64: about 500)
OUT=${OUT:?OUT must name the folder whose files come back}
NGPU=${NGPU:-$(python3 -c 'import torch; print(max(torch.cuda.device_count(), 1))')}
DATA=$DEMO_TMP/heads$RES-train.zip
HELDOUT=$DEMO_TMP/heads$RES-heldout.zip
RUN=$DEMO_TMP/run
cli() { python3 -c "import sys; from gsgan_core.cli import ${1}_main as m; sys.exit(m(sys.argv[1:]))" "${@:2}"; }

mkdir -p "$DEMO_TMP" "$OUT/state"
pkill -f "[g]sgan_core[.]train" && sleep 3 || true  # a chunk cut off by the time limit leaves its workers behind
# A chunk once trained 25x slower than the one before it on the same machine, for no visible reason:
# sample the GPUs (and whatever else runs on them) so the next one shows its cause.
# One file: $OUT brings back at most 8 (3 state pieces, network, log, grid, metrics, this).
{
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv  # other processes at the start
    nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
        --format=csv -l 30
} >"$OUT/gpu-monitor.csv" 2>&1 &
monitor=$!
trap 'pkill -P $monitor 2>/dev/null; kill $monitor 2>/dev/null || true' EXIT
# gsplat compiles its CUDA code on first use (about 40 s), into a folder that every process shares.
# Build it here, in one process, so that no training process ever compiles: the build flags include
# TORCH_CUDA_ARCH_LIST (unset, torch picks "9.0+PTX", not "9.0"), so a call without it rebuilt gsplat
# inside 4 starting training processes at once, and a rank of each job then hung with all GPU memory taken
# (run 4, the chunk after 1048 kimg: the one change from the chunk before, which ran normally).
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
python3 -c "import torch; from gsgan_core.render.gsplat_backend import probe; print('gsplat:', probe(torch.device('cuda')) or 'ok')" &
probe=$!  # runs beside the dataset rendering (CPU)
[ -f "$DATA" ] || cli dataset heads --count "$COUNT" --resolution "$RES" --seed 0 --cameras orbit --jobs 0 --out "$DATA"
wait $probe  # not a bare wait: the GPU monitor runs until the end

resume=()
if compgen -G ".demo/state/part-*" >/dev/null; then
    mkdir -p "$RUN"
    cat .demo/state/part-* >"$RUN/training-state.safetensors.tmp"
    mv "$RUN/training-state.safetensors.tmp" "$RUN/training-state.safetensors"
    resume=(--resume "$RUN")
    echo "resuming from the carried state ($(du -h "$RUN/training-state.safetensors" | cut -f1))"
else
    rm -rf "$RUN"
fi

python3 -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m gsgan_core.train \
    --data "$DATA" --outdir "$RUN" "${resume[@]}" \
    --preset "$PRESET" --g-pose-cond false --g-background false --d-channel-base 8192 --d-channel-max 128 \
    --g-anchor-floor-pixels "$ANCHOR_FLOOR" --r1-gamma "$R1_GAMMA" \
    --grid-yaws=-2.4,-1.2,-0.4,0,0.4,1.2,2.4,3.14 \
    --batch "$BATCH" --kimg 20000 --snap-kimg 50 --swd-images 1000 --workers 3 \
    --state-precision bfloat16 --max-minutes "$MINUTES" >"$DEMO_TMP/train-stdout.log" 2>&1 \
    || { tail -c 4000 "$DEMO_TMP/train-stdout.log"; exit 1; }
tail -c 1500 "$DEMO_TMP/train-stdout.log" | tr '\r' '\n' | tail -n 4

split -b 15M -d -a 2 "$RUN/training-state.safetensors" "$OUT/state/part-"
python3 - "$RUN/network-latest.safetensors" "$OUT/network-fp16.safetensors" <<'EOF'
import sys, torch
from gsgan_core.io.checkpoint import load_checkpoint, save_checkpoint
G, info = load_checkpoint(sys.argv[1])
save_checkpoint(sys.argv[2], G, training=info.training, dataset=info.dataset, camera=info.camera,
                weight_dtype=torch.float16)
EOF
cp "$RUN/log.jsonl" "$OUT/log.jsonl"
cp "$RUN/fakes-final.png" "$OUT/fakes-latest.png"
grep -E 'metrics/(swd|levels)' "$RUN/log.jsonl" | tail -n 6 || true
if [ "${EVAL:-0}" = 1 ]; then
    [ -f "$HELDOUT" ] || cli dataset heads --count "${HELDOUT_COUNT:-10000}" --resolution "$RES" --seed 1 --cameras orbit --jobs 0 --out "$HELDOUT"
    cli metrics --network "$RUN/network-latest.safetensors" --data "$HELDOUT" --num "${EVAL_NUM:-5000}" --metrics swd,levels --json | tee "$OUT/metrics.json"
fi
ls -la "$OUT" "$OUT/state"
