#!/usr/bin/env bash
# Compares two settings on the demo run: trains two copies of RUN's training state side by side
# (copy A on GPUS_A, default 0,1; copy B on GPUS_B, default 2,3), each up to KIMG total kimg (or
# MINUTES), and keeps the copy with the lower in-training SWD (mean of its last two snapshots): its
# files replace RUN's, the other copy stays in RUN-A or RUN-B. With EVAL=1 both copies are also
# measured on the held-out set (metrics.json in each folder). Run from the repository root:
#
#   GAMMAS="20 40" KIMG=6444 [LR_SCALES="0.04 0.04"] [SUPERSAMPLES="1 2"] \
#       [D_SIZES="8192:128 32768:160" NEW_DS="0 1"] [EMA_KIMGS="10 40"] \
#       [G_MODULATEDS="preset 1,1,1,1,1"] bash experiments/heads128/compare.sh
#
# Each pair gives the two copies' values of one train.sh setting: GAMMAS R1_GAMMA, LR_SCALES
# LR_SCALE (default "0.04 0.04"), SUPERSAMPLES SUPERSAMPLE ("1 1"), D_SIZES D_BASE:D_MAX
# ("32768:160 32768:160"), NEW_DS NEW_D ("0 0"), EMA_KIMGS EMA_KIMG ("40 40"), G_MODULATEDS
# G_MODULATED ("preset preset": the preset's levels). A copy with a new D spends its first 400 kimg
# learning D alone, so a new D is better started with train.sh (NEW_D=1) than compared here.
set -euo pipefail
KIMG=${KIMG:?KIMG: the total kimg at which both copies stop}
read -r GA GB <<<"${GAMMAS:?GAMMAS='GAMMA_A GAMMA_B'}"
read -r LA LB <<<"${LR_SCALES:-0.04 0.04}"
read -r SA SB <<<"${SUPERSAMPLES:-1 1}"
read -r DA DB <<<"${D_SIZES:-32768:160 32768:160}"
read -r NA NB <<<"${NEW_DS:-0 0}"
read -r EA EB <<<"${EMA_KIMGS:-40 40}"
read -r MA MB <<<"${G_MODULATEDS:-preset preset}"
GPUS_A=${GPUS_A:-0,1}
GPUS_B=${GPUS_B:-2,3}
here=$(dirname "$0")
source "$here/lib.sh"
RUN=${RUN:-$DEMO_DIR/run}
[ -f "$RUN/training-state.safetensors" ] || { echo "compare.sh: $RUN holds no training state (train.sh first)"; exit 1; }
start_gpu_monitor "$RUN/gpu-monitor.csv"
prepare_machine
logged=$(cat "$RUN/log.jsonl" 2>/dev/null | wc -l)  # the copies' own snapshots come after these lines

arm() {  # arm NAME GPUS GAMMA LR_SCALE SUPERSAMPLE D_BASE:D_MAX NEW_D EMA_KIMG G_MODULATED
    local run=$RUN-$1 modulated=$9 nproc
    [ "$modulated" = preset ] && modulated=
    nproc=$(awk -F, '{print NF}' <<<"$2")
    rm -rf "$run"; mkdir -p "$run"
    cp "$RUN/training-state.safetensors" "$run/"
    [ -f "$RUN/log.jsonl" ] && cp "$RUN/log.jsonl" "$run/"
    CUDA_VISIBLE_DEVICES=$2 R1_GAMMA=$3 LR_SCALE=$4 SUPERSAMPLE=$5 D_BASE=${6%%:*} D_MAX=${6##*:} NEW_D=$7 \
        EMA_KIMG=$8 G_MODULATED=$modulated train_demo "$nproc" "$run" "$run/train-stdout.log" \
        || { echo "copy $1 failed:"; tail -c 3000 "$run/train-stdout.log"; }
}
arm A "$GPUS_A" "$GA" "$LA" "$SA" "$DA" "$NA" "$EA" "$MA" &
pa=$!
arm B "$GPUS_B" "$GB" "$LB" "$SB" "$DB" "$NB" "$EB" "$MB" &
pb=$!
wait $pa $pb

score() { python3 - "$1" "$logged" <<'EOF'
import json, os, sys
lines = open(sys.argv[1]).readlines()[int(sys.argv[2]):] if os.path.exists(sys.argv[1]) else []
s = [json.loads(l) for l in lines if "metrics/swd" in l]
if not s: print(1e9); sys.exit()  # a copy that failed loses
for r in s: print("  ", round(r["kimg"], 1), round(r["metrics/swd"], 2), [round(v, 1) for v in r["metrics/swd_levels"]], file=sys.stderr)
print(sum(r["metrics/swd"] for r in s[-2:]) / len(s[-2:]))
EOF
}
echo "copy A gamma $GA lr x$LA supersample $SA D $DA new $NA ema $EA modulated $MA:"; sa=$(score "$RUN-A/log.jsonl"); echo "  score $sa"
echo "copy B gamma $GB lr x$LB supersample $SB D $DB new $NB ema $EB modulated $MB:"; sb=$(score "$RUN-B/log.jsonl"); echo "  score $sb"
win=A lose=B; python3 -c "import sys; sys.exit(0 if $sb < $sa else 1)" && win=B lose=A
python3 -c "import sys; sys.exit(0 if min($sa, $sb) < 1e9 else 1)" || { echo "both copies failed; $RUN is unchanged"; exit 1; }
echo "kept: copy $win"

if [ "${EVAL:-0}" = 1 ]; then
    heldout_set  # once, before the two evaluations run side by side
    pids=()
    for copy in A B; do
        gpus=GPUS_$copy
        [ -f "$RUN-$copy/network-latest.safetensors" ] || continue
        CUDA_VISIBLE_DEVICES=${!gpus%%,*} evaluate "$RUN-$copy/network-latest.safetensors" "$RUN-$copy/metrics.json" >/dev/null &
        pids+=($!)
    done
    [ ${#pids[@]} = 0 ] || wait "${pids[@]}" || true  # not a bare wait: the GPU monitor runs until the end
    for copy in "$win" "$lose"; do
        [ -f "$RUN-$copy/metrics.json" ] && { echo "copy $copy, held-out:"; cat "$RUN-$copy/metrics.json"; }
    done
fi

rm -f "$RUN/metrics.json"
cp -a "$RUN-$win/." "$RUN/"  # the kept copy's state, log, snapshots and metrics replace RUN's
rm -rf "$RUN-$win"
export_fp16 "$RUN"
tail -c 600 "$RUN/train-stdout.log" | tr '\r' '\n' | tail -n 3
