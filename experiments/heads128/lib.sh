# Shared by train.sh and compare.sh (sourced, not run). Settings come from the environment; each
# script sets the ones it needs before sourcing this file (see README.md for the list).

DEMO_DIR=${DEMO_DIR:-out/heads128}  # datasets and the run folder
PRESET=${PRESET:-heads128}
RES=${RES:-128}
COUNT=${COUNT:-30000}              # training images (seed 0); the held-out set is seed 1
DATA=${DATA:-$DEMO_DIR/heads$RES-train.zip}
HELDOUT=${HELDOUT:-$DEMO_DIR/heads$RES-heldout.zip}

# start_gpu_monitor FILE: samples the GPUs (and whatever else runs on them) every 30 s into FILE,
# so that a slow or stuck run shows its cause (clocks, throttling, utilisation, memory). It stops
# when the calling script exits.
start_gpu_monitor() {
    command -v nvidia-smi >/dev/null || return 0
    {
        nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv  # other processes at the start
        nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
            --format=csv -l 30
    } >>"$1" 2>&1 &
    GPU_MONITOR=$!
    trap 'pkill -P $GPU_MONITOR 2>/dev/null; kill $GPU_MONITOR 2>/dev/null || true' EXIT
}

# prepare_machine: renders the training set into $DATA unless it is there (it depends only on its
# seed, so every machine renders the same images), while gsplat builds beside it.
#
# gsplat compiles its CUDA code on first use (about 40 s), into a folder that every process shares.
# It is built here, in one process, so that no training process ever compiles: several DDP
# processes building it at once can leave a rank hung with all its GPU memory taken. The build
# flags include TORCH_CUDA_ARCH_LIST (unset, torch picks "9.0+PTX", not "9.0"), so it is fixed here
# to the GPU's own architecture.
prepare_machine() {
    mkdir -p "$(dirname "$DATA")"
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
    python3 -c "import torch; from gsgan_core.render.gsplat_backend import probe; print('gsplat:', probe(torch.device('cuda')) or 'ok')" &
    local probe=$!
    [ -f "$DATA" ] || gsgan-dataset heads --count "$COUNT" --resolution "$RES" --seed 0 --cameras orbit --jobs 0 --out "$DATA" | tail -n 1
    wait $probe  # not a bare wait: the GPU monitor runs until the end
}

# train_demo NPROC RUN LOG: the demo's recipe (README.md) on NPROC GPUs of CUDA_VISIBLE_DEVICES,
# writing into RUN and resuming from RUN's training state when it has one; stdout and stderr go to
# LOG. Reads R1_GAMMA, LR_SCALE (both learning rates times this), SUPERSAMPLE, D_BASE, D_MAX,
# EMA_KIMG, ANCHOR_FLOOR, BATCH, KIMG (stop at this total kimg), MINUTES (0: no time limit),
# SNAP_KIMG (a snapshot every this many kimg) and SWD_IMAGES (in-training SWD on this many images).
#
# NEW_D=1 resumes G alone and starts a new D of D_BASE:D_MAX, which learns alone for D_WARMUP_KIMG
# (default 400) while G stays still. INIT_G=FILE (with no state in RUN) starts from a generator
# checkpoint instead, e.g. the shipped one: its weights as G and G_ema, a new D that learns alone
# for D_WARMUP_KIMG (default 400), fresh optimisers, kimg counting on from the file's. A new D
# needs hundreds of kimg alone before it steers a trained G: its camera head starts untrained, and
# until it reads the cameras of real heads well it pulls G towards whatever images make their
# camera easy to read, which costs G quality; hence the default of 400. The warm-up is counted
# from the new D's start and lasts only while a command passes it: set D_WARMUP_KIMG again on each
# later command of it, and run those at LR_SCALE=1 (G is still; at 0.04 a new D learns slowly).
#
# G_MODULATED (e.g. 1,1,1,1,1; empty: the preset's levels 0-2) passes --g-modulated, and with a
# state --resume-modulate, which w-modulates more levels of the state's G (exactly as it was, then
# trained); every later command of that run must pass the same G_MODULATED.
train_demo() {
    local resume=() state=$2/training-state.safetensors
    [ -f "$state" ] && resume=(--resume "$2")
    local warmup=${D_WARMUP_KIMG:-}
    [ "${NEW_D:-0}" = 1 ] && { resume+=(--resume-new-d true); warmup=${warmup:-400}; }
    [ -n "${INIT_G:-}" ] && [ ! -f "$state" ] && { resume+=(--init-g "$INIT_G"); warmup=${warmup:-400}; }
    [ -n "$warmup" ] && resume+=(--d-warmup-kimg "$warmup")
    if [ -n "${G_MODULATED:-}" ]; then
        resume+=(--g-modulated "$G_MODULATED")
        [ -f "$state" ] && resume+=(--resume-modulate true)
    fi
    local scale=${LR_SCALE:-0.04}
    python3 -m torch.distributed.run --standalone --nproc_per_node "$1" -m gsgan_core.train \
        --data "$DATA" --outdir "$2" "${resume[@]}" \
        --preset "$PRESET" --g-pose-cond false --g-background false --d-channel-base "${D_BASE:-32768}" --d-channel-max "${D_MAX:-160}" \
        --g-anchor-floor-pixels "${ANCHOR_FLOOR:-0.5}" --r1-gamma "${R1_GAMMA:-40}" \
        --g-lr "$(python3 -c "from gsgan_core.train.config import TrainConfig as T; print(T.g_lr * $scale)")" \
        --d-lr "$(python3 -c "from gsgan_core.train.config import TrainConfig as T; print(T.d_lr * $scale)")" \
        --render-supersample "${SUPERSAMPLE:-1}" --ema-kimg "${EMA_KIMG:-40}" \
        --grid-yaws=-2.4,-1.2,-0.4,0,0.4,1.2,2.4,3.14 \
        --batch "${BATCH:-128}" --kimg "${KIMG:-20000}" --snap-kimg "${SNAP_KIMG:-50}" --swd-images "${SWD_IMAGES:-1000}" --workers 3 \
        --state-precision "${STATE_PRECISION:-float32}" --max-minutes "${MINUTES:-0}" >"$3" 2>&1
}

# export_fp16 RUN: RUN's latest generator in float16, the form that assets/ ships, as
# RUN/network-fp16.safetensors.
export_fp16() {
    python3 - "$1/network-latest.safetensors" "$1/network-fp16.safetensors" <<'PY'
import sys, torch
from gsgan_core.io.checkpoint import load_checkpoint, save_checkpoint
G, info = load_checkpoint(sys.argv[1])
save_checkpoint(sys.argv[2], G, training=info.training, dataset=info.dataset, camera=info.camera,
                weight_dtype=torch.float16)
PY
}

# heldout_set: renders the held-out set (seed 1, never seen in training) into $HELDOUT unless it is there.
heldout_set() {
    mkdir -p "$(dirname "$HELDOUT")"
    [ -f "$HELDOUT" ] || gsgan-dataset heads --count "${HELDOUT_COUNT:-10000}" --resolution "$RES" --seed 1 --cameras orbit --jobs 0 --out "$HELDOUT" | tail -n 1
}

# evaluate NETWORK [FILE]: the held-out metrics, printed and, given FILE, written there: SWD of
# 5,000 generated images vs 5,000 held-out ones and the real-vs-real floor, under both
# normalisations (swd*: the original SWD's; swd_joint*: the stricter one; metrics/swd.py), and each
# level's share.
evaluate() {
    heldout_set
    gsgan-metrics --network "$1" --data "$HELDOUT" --num "${EVAL_NUM:-5000}" \
        --metrics swd,levels --swd-normalise both --json | tee "${2:-/dev/null}"
}
