#!/usr/bin/env bash
# Run 4's chunks after 535 kimg: resume the demo run twice side by side on a 4-GPU machine, 2 GPUs
# each, with two R1 gammas; send back the state of the arm with the lower in-training SWD (mean of
# its last two snapshots), both logs, and with EVAL=1 the held-out metrics of the winner.
# Same inputs, outputs and recipe as train_chunk.sh (read that first); run from the repository root:
#
#   GAMMAS="1 3" bash scripts/demo/ab_chunk.sh MINUTES
set -euo pipefail
MINUTES=${1:?}
read -r GA GB <<<"${GAMMAS:?GAMMAS='GAMMA_A GAMMA_B'}"
DEMO_TMP=/tmp/gsgan-demo
DATA=$DEMO_TMP/heads128-train.zip
OUT=${OUT:?}
cli() { python3 -c "import sys; from gsgan_core.cli import ${1}_main as m; sys.exit(m(sys.argv[1:]))" "${@:2}"; }
mkdir -p "$DEMO_TMP" "$OUT/state"
{
    nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,clocks.sm,power.draw,clocks_throttle_reasons.active \
        --format=csv -l 30
} >"$OUT/gpu-monitor.csv" 2>&1 &
monitor=$!
trap 'pkill -P $monitor 2>/dev/null; kill $monitor 2>/dev/null || true' EXIT
# gsplat is built here, never inside the training processes: see train_chunk.sh
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
python3 -c "import torch; from gsgan_core.render.gsplat_backend import probe; print('gsplat:', probe(torch.device('cuda')) or 'ok')" &
probe=$!
[ -f "$DATA" ] || cli dataset heads --count 30000 --resolution 128 --seed 0 --cameras orbit --jobs 0 --out "$DATA" | tail -n 1
wait $probe
arm() {  # arm NAME GAMMA GPUS
    local run=$DEMO_TMP/run-$1
    rm -rf "$run"; mkdir -p "$run"
    cat .demo/state/part-* >"$run/training-state.safetensors"
    CUDA_VISIBLE_DEVICES=$3 python3 -m torch.distributed.run --standalone --nproc_per_node 2 -m gsgan_core.train \
        --data "$DATA" --outdir "$run" --resume "$run" \
        --preset heads128 --g-pose-cond false --g-background false --d-channel-base 8192 --d-channel-max 128 \
        --g-anchor-floor-pixels 0.5 --r1-gamma "$2" \
        --grid-yaws=-2.4,-1.2,-0.4,0,0.4,1.2,2.4,3.14 \
        --batch 128 --kimg 20000 --snap-kimg 50 --swd-images 1000 --workers 3 \
        --state-precision bfloat16 --max-minutes "$MINUTES" >"$run/stdout.log" 2>&1 \
        || { echo "arm $1 failed:"; tail -c 3000 "$run/stdout.log"; }
}
arm A "$GA" 0,1 &
pa=$!
arm B "$GB" 2,3 &
pb=$!
wait $pa $pb
score() { python3 - "$1" <<'EOF'
import json, sys
s = [json.loads(l) for l in open(sys.argv[1]) if "metrics/swd" in l]
for r in s: print("  ", round(r["kimg"], 1), round(r["metrics/swd"], 2), [round(v, 1) for v in r["metrics/swd_levels"]], file=sys.stderr)
print(sum(r["metrics/swd"] for r in s[-2:]) / len(s[-2:]))
EOF
}
echo "arm A gamma $GA:"; sa=$(score $DEMO_TMP/run-A/log.jsonl); echo "  score $sa"
echo "arm B gamma $GB:"; sb=$(score $DEMO_TMP/run-B/log.jsonl); echo "  score $sb"
win=A; python3 -c "import sys; sys.exit(0 if $sb < $sa else 1)" && win=B
echo "winner: arm $win"
run=$DEMO_TMP/run-$win
split -b 15M -d -a 2 "$run/training-state.safetensors" "$OUT/state/part-"
python3 - "$run/network-latest.safetensors" "$OUT/network-fp16.safetensors" <<'EOF'
import sys, torch
from gsgan_core.io.checkpoint import load_checkpoint, save_checkpoint
G, info = load_checkpoint(sys.argv[1])
save_checkpoint(sys.argv[2], G, training=info.training, dataset=info.dataset, camera=info.camera,
                weight_dtype=torch.float16)
EOF
cp $DEMO_TMP/run-A/log.jsonl "$OUT/log-A.jsonl"; cp $DEMO_TMP/run-B/log.jsonl "$OUT/log-B.jsonl"
cp "$run/fakes-final.png" "$OUT/fakes-latest.png"
tail -c 600 "$run/stdout.log" | tr '\r' '\n' | tail -n 3
ls -la "$OUT" "$OUT/state"
if [ "${EVAL:-0}" = 1 ]; then
    HELDOUT=$DEMO_TMP/heads128-heldout.zip
    [ -f "$HELDOUT" ] || cli dataset heads --count 10000 --resolution 128 --seed 1 --cameras orbit --jobs 0 --out "$HELDOUT" | tail -n 1
    cli metrics --network "$run/network-latest.safetensors" --data "$HELDOUT" --num 5000 --metrics swd,levels --json >"$DEMO_TMP/metrics.json"
    cat "$DEMO_TMP/metrics.json"; rm -f "$OUT/gpu-monitor.csv"; cp "$DEMO_TMP/metrics.json" "$OUT/metrics.json"
fi
