# Shared by train_chunk.sh and ab_chunk.sh (sourced, not run). Needs OUT and DEMO_TMP set (and DATA
# for train_demo).

cli() { python3 -c "import sys; from gsgan_core.cli import ${1}_main as m; sys.exit(m(sys.argv[1:]))" "${@:2}"; }

# A chunk once trained 25x slower than the one before it on the same machine, and another hung:
# sample the GPUs (and whatever else runs on them) every 30 s so the next one shows its cause.
# One file: $OUT brings back at most 8. Stopped when the calling script exits.
start_gpu_monitor() {
    {
        nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv  # other processes at the start
        nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
            --format=csv -l 30
    } >"$OUT/gpu-monitor.csv" 2>&1 &
    GPU_MONITOR=$!
    trap 'pkill -P $GPU_MONITOR 2>/dev/null; kill $GPU_MONITOR 2>/dev/null || true' EXIT
}

# prepare_machine DATA COUNT RES: renders the training set once per machine (it depends only on its
# seed, so every machine renders the same images) while gsplat builds beside it.
#
# gsplat compiles its CUDA code on first use (about 40 s), into a folder that every process shares.
# It is built here, in one process, so that no training process ever compiles: the build flags include
# TORCH_CUDA_ARCH_LIST (unset, torch picks "9.0+PTX", not "9.0"), so a call without it rebuilt gsplat
# inside 4 starting training processes at once, and a rank of each job then hung with all GPU memory
# taken (run 4, the chunk after 1048 kimg: the one change from the chunk before, which ran normally).
prepare_machine() {
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
    python3 -c "import torch; from gsgan_core.render.gsplat_backend import probe; print('gsplat:', probe(torch.device('cuda')) or 'ok')" &
    local probe=$!
    [ -f "$1" ] || cli dataset heads --count "$2" --resolution "$3" --seed 0 --cameras orbit --jobs 0 --out "$1" | tail -n 1
    wait $probe  # not a bare wait: the GPU monitor runs until the end
}

# chunk_limit_s MINUTES: seconds after which a training command is killed. --max-minutes stops it
# well before (2 min are for start-up and the final snapshot); this only ends a hung one, so that
# the script still sends back what it has instead of running into the command limit.
chunk_limit_s() { python3 -c "import sys; print(int(float(sys.argv[1]) * 60 + 120))" "$1"; }

# train_demo NPROC RUN R1_GAMMA MINUTES LOG [LR_SCALE [SUPERSAMPLE]]: the demo's recipe
# (assets/README.md) on NPROC GPUs of CUDA_VISIBLE_DEVICES, writing into RUN and resuming from RUN's
# training state when it has one, with both learning rates times LR_SCALE (default 1) and fakes
# rendered at SUPERSAMPLE x the resolution and averaged down (default 1); its output goes to LOG.
# The discriminator has channel base D_BASE and at most D_MAX channels (default 32768 and 160, which
# a resumed state must match; run 4 used 8192 and 128 to 2,246 kimg); NEW_D=1 resumes G alone and
# starts a new D of that size, which learns for D_WARMUP_KIMG (default 400: 20 broke G,
# assets/README.md) while G stays still. INIT_G=FILE (with no state) starts from a generator checkpoint
# instead, e.g. the shipped one: its weights as G and G_ema, a new D that learns alone for D_WARMUP_KIMG
# (default 400), fresh optimisers, kimg counting on from the file's. The warm-up counts from the new
# D's start and lasts only while a command passes it: set D_WARMUP_KIMG again on each later chunk of
# it, and run those chunks at LR_SCALE=1 (G is still; at 0.04 a new D's pose loss fell 4.8 -> 3.4 in
# 92 kimg, at 1 4.5 -> 2.45 in 100).
# G_ema's half-life is EMA_KIMG kimg (default 10, GSGAN's at batch 32; StyleGAN2-ADA scales it with
# the batch, which at 128 gives 40). G_MODULATED (e.g. 1,1,1,1,1; default
# empty: the preset's levels 0-2) passes --g-modulated, and with a state --resume-modulate, which
# w-modulates more levels of the state's G (exactly as it was, then trained); every later chunk of
# that run must pass the same G_MODULATED.
# Fails when training fails or is killed (chunk_limit_s).
train_demo() {
    local resume=() scale=${6:-1} supersample=${7:-1}
    [ -f "$2/training-state.safetensors" ] && resume=(--resume "$2")
    local warmup=${D_WARMUP_KIMG:-}
    [ "${NEW_D:-0}" = 1 ] && { resume+=(--resume-new-d true); warmup=${warmup:-400}; }
    [ -n "${INIT_G:-}" ] && { resume+=(--init-g "$INIT_G"); warmup=${warmup:-400}; }
    [ -n "$warmup" ] && resume+=(--d-warmup-kimg "$warmup")
    if [ -n "${G_MODULATED:-}" ]; then
        resume+=(--g-modulated "$G_MODULATED")
        [ -f "$2/training-state.safetensors" ] && resume+=(--resume-modulate true)
    fi
    timeout -k 10 "$(chunk_limit_s "$4")" python3 -m torch.distributed.run --standalone --nproc_per_node "$1" -m gsgan_core.train \
        --data "$DATA" --outdir "$2" "${resume[@]}" \
        --preset "${PRESET:-heads128}" --g-pose-cond false --g-background false --d-channel-base "${D_BASE:-32768}" --d-channel-max "${D_MAX:-160}" \
        --g-anchor-floor-pixels "${ANCHOR_FLOOR:-0.5}" --r1-gamma "$3" \
        --g-lr "$(python3 -c "print(0.0025 * $scale)")" --d-lr "$(python3 -c "print(0.002 * $scale)")" \
        --render-supersample "$supersample" --ema-kimg "${EMA_KIMG:-10}" \
        --grid-yaws=-2.4,-1.2,-0.4,0,0.4,1.2,2.4,3.14 \
        --batch "${BATCH:-128}" --kimg 20000 --snap-kimg 50 --swd-images 1000 --workers 3 \
        --state-precision bfloat16 --max-minutes "$4" >"$5" 2>&1
}

# send_back RUN: the run's training state in pieces under the 16 MiB transfer limit, its generator
# in float16 (the shipped form), the last snapshot grid.
send_back() {
    split -b 15M -d -a 2 "$1/training-state.safetensors" "$OUT/state/part-"
    python3 - "$1/network-latest.safetensors" "$OUT/network-fp16.safetensors" <<'PY'
import sys, torch
from gsgan_core.io.checkpoint import load_checkpoint, save_checkpoint
G, info = load_checkpoint(sys.argv[1])
save_checkpoint(sys.argv[2], G, training=info.training, dataset=info.dataset, camera=info.camera,
                weight_dtype=torch.float16)
PY
    cp "$1/fakes-final.png" "$OUT/fakes-latest.png"
}

# heldout_set: renders the held-out set (seed 1, never seen in training) once per machine into
# $HELDOUT, for evaluate.
heldout_set() {
    HELDOUT=$DEMO_TMP/heads${RES:-128}-heldout.zip
    [ -f "$HELDOUT" ] || cli dataset heads --count "${HELDOUT_COUNT:-10000}" --resolution "${RES:-128}" --seed 1 --cameras orbit --jobs 0 --out "$HELDOUT" | tail -n 1
}

# evaluate NETWORK [FILE]: with EVAL=1, the held-out metrics into FILE (default $OUT/metrics.json): SWD of
# 5,000 generated images vs 5,000 held-out ones and the real-vs-real floor, under both normalisations
# (swd*: the original SWD's; swd_joint*: the stricter one; metrics/swd.py), each level's share.
evaluate() {
    [ "${EVAL:-0}" = 1 ] || return 0
    heldout_set
    cli metrics --network "$1" --data "$HELDOUT" --num "${EVAL_NUM:-5000}" \
        --metrics swd,levels --swd-normalise both --json | tee "${2:-$OUT/metrics.json}"
}
