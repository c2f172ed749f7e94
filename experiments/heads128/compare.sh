#!/usr/bin/env bash
# Run 4's chunks after 535 kimg: resume the demo run twice side by side on a 4-GPU machine, 2 GPUs
# each, with two R1 gammas; send back the state of the arm with the lower in-training SWD (mean of
# its last two snapshots), both logs, and with EVAL=1 the held-out metrics of both (the winner's in
# metrics.json, the other's in the output only: $OUT brings back 8 files). LR_SCALES
# (default "0.04 0.04", train_chunk.sh's LR_SCALE) scales both learning rates of each arm;
# SUPERSAMPLES (default "1 1") sets each arm's --render-supersample; D_SIZES (default
# "32768:160 32768:160") each arm's discriminator channel base:max; EMA_KIMGS (default "40 40") each
# arm's G_ema half-life in kimg; G_MODULATEDS (default "preset preset") each arm's w-modulated levels
# ("preset" or e.g. 1,1,1,1,1: lib.sh's G_MODULATED; if that arm wins, every later chunk passes the
# same G_MODULATED); NEW_DS (default "0 0") 1 for an arm that keeps the state's G and starts a new D
# of its size (lib.sh's train_demo, NEW_D); that copy spends a whole chunk learning D alone (400
# kimg), so a new D is better started with train_chunk.sh (NEW_D=1, assets/README.md) than compared here.
# With EVAL=1, MINUTES=5.5 is at the edge of the 590 s command limit on a machine that has not
# rendered the dataset yet: it fitted for gamma 20 vs 40, and for 80 vs 160 it did not (no held-out metrics).
# Same inputs, outputs and recipe as train_chunk.sh (read that first); run from the repository root:
#
#   GAMMAS="1 3" [LR_SCALES="1 0.5"] [SUPERSAMPLES="1 2"] [D_SIZES="8192:128 32768:160" NEW_DS="0 1"] \
#       [EMA_KIMGS="10 40"] [G_MODULATEDS="preset 1,1,1,1,1"] bash scripts/demo/ab_chunk.sh MINUTES
set -euo pipefail
MINUTES=${1:?}
read -r GA GB <<<"${GAMMAS:?GAMMAS='GAMMA_A GAMMA_B'}"
read -r LA LB <<<"${LR_SCALES:-0.04 0.04}"
read -r SA SB <<<"${SUPERSAMPLES:-1 1}"
read -r DA DB <<<"${D_SIZES:-32768:160 32768:160}"
read -r NA NB <<<"${NEW_DS:-0 0}"
read -r EA EB <<<"${EMA_KIMGS:-40 40}"
read -r MA MB <<<"${G_MODULATEDS:-preset preset}"
DEMO_TMP=/tmp/gsgan-demo
DATA=$DEMO_TMP/heads128-train.zip
OUT=${OUT:?}
source scripts/demo/lib.sh
mkdir -p "$DEMO_TMP" "$OUT/state"
pkill -f "[g]sgan_core[.]train" && sleep 3 || true  # a chunk cut off by the time limit leaves its workers behind
start_gpu_monitor
prepare_machine "$DATA" 30000 128
arm() {  # arm NAME GAMMA GPUS LR_SCALE SUPERSAMPLE D_BASE:D_MAX NEW_D EMA_KIMG G_MODULATED
    local run=$DEMO_TMP/run-$1
    rm -rf "$run"; mkdir -p "$run"
    cat .demo/state/part-* >"$run/training-state.safetensors"
    local modulated=$9; [ "$modulated" = preset ] && modulated=
    CUDA_VISIBLE_DEVICES=$3 D_BASE=${6%%:*} D_MAX=${6##*:} NEW_D=$7 EMA_KIMG=$8 G_MODULATED=$modulated train_demo 2 "$run" "$2" "$MINUTES" "$run/stdout.log" "$4" "$5" \
        || { echo "arm $1 failed:"; tail -c 3000 "$run/stdout.log"; }
}
arm A "$GA" 0,1 "$LA" "$SA" "$DA" "$NA" "$EA" "$MA" &
pa=$!
arm B "$GB" 2,3 "$LB" "$SB" "$DB" "$NB" "$EB" "$MB" &
pb=$!
wait $pa $pb
score() { python3 - "$1" <<'EOF'
import json, os, sys
s = [json.loads(l) for l in open(sys.argv[1]) if "metrics/swd" in l] if os.path.exists(sys.argv[1]) else []
if not s: print(1e9); sys.exit()  # a failed arm loses
for r in s: print("  ", round(r["kimg"], 1), round(r["metrics/swd"], 2), [round(v, 1) for v in r["metrics/swd_levels"]], file=sys.stderr)
print(sum(r["metrics/swd"] for r in s[-2:]) / len(s[-2:]))
EOF
}
echo "arm A gamma $GA lr x$LA supersample $SA D $DA new $NA ema $EA modulated $MA:"; sa=$(score $DEMO_TMP/run-A/log.jsonl); echo "  score $sa"
echo "arm B gamma $GB lr x$LB supersample $SB D $DB new $NB ema $EB modulated $MB:"; sb=$(score $DEMO_TMP/run-B/log.jsonl); echo "  score $sb"
win=A lose=B; python3 -c "import sys; sys.exit(0 if $sb < $sa else 1)" && win=B lose=A
echo "winner: arm $win"
run=$DEMO_TMP/run-$win
send_back "$run"
cp $DEMO_TMP/run-A/log.jsonl "$OUT/log-A.jsonl"; cp $DEMO_TMP/run-B/log.jsonl "$OUT/log-B.jsonl"
tail -c 600 "$run/stdout.log" | tr '\r' '\n' | tail -n 3
if [ "${EVAL:-0}" = 1 ]; then
    rm -f "$OUT/gpu-monitor.csv"  # 8 files at most: 3 state pieces, network, grid, 2 logs, metrics
    heldout_set  # once, before the two evaluations run side by side
    if [ -f "$DEMO_TMP/run-$lose/network-latest.safetensors" ]; then
        CUDA_VISIBLE_DEVICES=2 evaluate "$DEMO_TMP/run-$lose/network-latest.safetensors" "$DEMO_TMP/metrics-$lose.json" >/dev/null &
        pl=$!
    fi
    echo "arm $win (winner), held-out:"
    CUDA_VISIBLE_DEVICES=0 evaluate "$run/network-latest.safetensors"
    if [ -n "${pl:-}" ]; then wait $pl && echo "arm $lose, held-out:" && cat "$DEMO_TMP/metrics-$lose.json"; fi
fi
ls -la "$OUT" "$OUT/state"
