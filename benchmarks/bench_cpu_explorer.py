"""The explorer on the CPU, end to end, on the demo checkpoint: its three CPU targets.

    python benchmarks/bench_cpu_explorer.py [--views 60] [--ref-frames 5] [--seeds 8] [--resolution 256]
                                            [--cli-runs 1 | --skip-cli] [--out DIR]

What it measures (everything through the explorer's own engine, `interactive_engine("cpu")`, as the
render worker calls it: `engine.frame(state)` -> a uint8 image):

  orbit          the camera turning round the head (a turntable of --views states, yaw only, the
                 default framed camera), one frame per state at --resolution: the compiled rasterizer,
                 + colour mapping + uint8. Target: median <= 100 ms (>= 10 frames/s). Also the
                 preview resolution the view uses while dragging when full frames are slow (half).
  reference      the first --ref-frames of the same states with the reference rasterizer
                 (`Engine(backend="reference")`), interleaved state by state with the compiled one
                 so both see the same load: ratio = reference median / compiled median, this run.
  latent change  a new seed, then its first frame: mapping + generator + level edits + the frame.
                 Target: median <= 0.3 s. Beside it, per seed, the generator's reference code
                 (`Generator.cpu_inference = False`: plain PyTorch) with the same frame.
  gsgan-render   `gsgan-render assets/heads128.safetensors --seeds 0 --frames 60 --resolution 256
                 --trajectory turntable --out TMP.mp4` in a subprocess, wall clock, process start to
                 exit (imports, load, Numba's cached kernels, 60 frames, H.264). Target: <= 30 s.

Each row gives the median and 90th percentile of the wall clock and the median process CPU time
(all threads). On a machine shared with other jobs the wall clock swings with their load; the load
average (1 minute) and the runnable tasks of /proc/loadavg are printed before and after each part.
Writes DIR/bench_cpu_explorer.json when --out is given; prints a table last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

from common import summary, timed

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "heads128.safetensors"
TARGET_FRAME_MS = 100.0
TARGET_LATENT_S = 0.3
TARGET_CLI_S = 30.0


def log(line: str = "") -> None:
    print(line, flush=True)


def load() -> str:
    one, five, _ = os.getloadavg()
    try:
        running = Path("/proc/loadavg").read_text().split()[3]
    except OSError:
        running = "?"
    return f"load {one:.2f} (1 min) {five:.2f} (5 min), runnable {running}"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) / 255.0).__pow__(2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def engines():
    from gsgan_core.view.engine import Engine, interactive_engine

    fast = interactive_engine(torch.device("cpu"))
    fast.load(DEMO)
    reference = Engine("cpu", backend="reference")
    reference.load(DEMO)
    reference.generator.cpu_inference = False  # the generator's reference code too
    return fast, reference


def bench_orbit(fast, reference, args) -> dict:
    from gsgan_core.view.state import ExplorerState, RenderSettings

    size = args.resolution
    camera = fast.default_camera()
    base = ExplorerState(camera=camera, render=RenderSettings(resolution=size))
    states = []
    for i in range(args.views):
        state = base.copy()
        state.camera = replace(camera, yaw=camera.yaw + 2 * math.pi * i / args.views)
        states.append(state)
    result = {"load_before": load()}
    fast.frame(base)  # warm-up: generator output cached, kernels loaded
    reference.frame(base)
    walls, cpus = [], []
    for state in states:
        w, c, _ = timed(lambda: fast.frame(state))
        walls.append(w)
        cpus.append(c)
    result["compiled"] = summary(walls, cpus)
    result["backend"] = fast.stats.backend
    result["backend_report"] = fast.backend_name()

    preview = []
    for state in states[: max(args.views // 2, 1)]:
        small = state.copy()
        small.render = replace(state.render, resolution=size // 2)
        small.camera = replace(state.camera, yaw=state.camera.yaw + 1e-3)  # not cached
        w, c, _ = timed(lambda: fast.frame(small))
        preview.append((w, c))
    result["preview"] = summary([w for w, _ in preview], [c for _, c in preview])
    result["preview_resolution"] = size // 2

    # The same states, reference and compiled interleaved (fresh cameras: no frame cache hits).
    ref_w, ref_c, cmp_w, cmp_c, db = [], [], [], [], []
    for state in states[: args.ref_frames]:
        state = state.copy()
        state.camera = replace(state.camera, pitch=state.camera.pitch + 1e-3)
        w, c, ref_frame = timed(lambda: reference.frame(state))
        ref_w.append(w)
        ref_c.append(c)
        w, c, fast_frame = timed(lambda: fast.frame(state))
        cmp_w.append(w)
        cmp_c.append(c)
        db.append(psnr(fast_frame.image, ref_frame.image))
    result["reference"] = summary(ref_w, ref_c)
    result["compiled_beside_reference"] = summary(cmp_w, cmp_c)
    result["ratio"] = result["reference"]["median_ms"] / result["compiled_beside_reference"]["median_ms"]
    result["psnr_uint8_db_min"] = min(db)
    result["load_after"] = load()
    return result


def bench_latent(fast, reference, args) -> dict:
    from gsgan_core.view.state import ExplorerState, LatentState, RenderSettings

    size = args.resolution
    camera = fast.default_camera()
    result = {"load_before": load()}
    rows: dict[str, tuple[list, list, list, list]] = {}
    for seed in range(100, 100 + args.seeds):
        state = ExplorerState(latent=LatentState(seed_a=seed), camera=camera, render=RenderSettings(resolution=size))
        for name, engine in (("fast", fast), ("reference_generator", reference)):
            if name == "reference_generator" and seed >= 100 + args.ref_seeds:
                continue
            w, c, _ = timed(lambda: engine.frame(state))
            walls, cpus, gen, ras = rows.setdefault(name, ([], [], [], []))
            walls.append(w)
            cpus.append(c)
            gen.append(engine.stats.generator_ms)
            ras.append(engine.stats.render_ms)
    for name, (walls, cpus, gen, ras) in rows.items():
        result[name] = summary(walls, cpus) | {"generator_median_ms": statistics.median(gen),
                                                 "frame_median_ms": statistics.median(ras)}
    result["generator_ratio"] = (result["reference_generator"]["generator_median_ms"]
                                 / result["fast"]["generator_median_ms"])
    result["load_after"] = load()
    return result


def bench_cli(args) -> dict:
    exe = Path(sys.executable).with_name("gsgan-render")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "t.mp4"
        command = [str(exe) if exe.exists() else "gsgan-render", "assets/heads128.safetensors", "--seeds", "0",
                   "--frames", "60", "--resolution", "256", "--trajectory", "turntable", "--out", str(out)]
        result = {"command": " ".join(["gsgan-render"] + command[1:-1] + ["/tmp/t.mp4"]), "load_before": load()}
        runs = []
        for _ in range(args.cli_runs):
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            runs.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise RuntimeError(f"gsgan-render failed:\n{done.stderr}")
        result["seconds"] = runs
        result["median_s"] = statistics.median(runs)
        result["load_after"] = load()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--views", type=int, default=60, help="orbit states (frames) at full resolution")
    p.add_argument("--ref-frames", type=int, default=5, help="of those, how many also with the reference rasterizer")
    p.add_argument("--seeds", type=int, default=8, help="latent changes (new seeds) with the fast path")
    p.add_argument("--ref-seeds", type=int, default=4, help="of those, how many also with the reference generator")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--cli-runs", type=int, default=1, help="gsgan-render runs to time (0: none, as --skip-cli)")
    p.add_argument("--skip-cli", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.cli_runs < 0:
        p.error("--cli-runs: 0 or more")
    os.chdir(ROOT)

    import numba

    facts = {
        "date": date.today().isoformat(), "device": f"{os.cpu_count()}-core CPU", "cpu": platform.processor(),
        "torch": torch.__version__, "numba": numba.__version__, "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS, "python": platform.python_version(),
        "argv": sys.argv[1:],
    }
    log(f"== bench_cpu_explorer {facts['date']} on a {facts['device']} ({load()})")
    fast, reference = engines()
    torch.set_grad_enabled(False)
    orbit = bench_orbit(fast, reference, args)
    log(f"orbit done ({orbit['load_after']})")
    latent = bench_latent(fast, reference, args)
    log(f"latent changes done ({latent['load_after']})")
    cli = None if args.skip_cli or args.cli_runs == 0 else bench_cli(args)
    if cli:
        log(f"gsgan-render done ({cli['load_after']})")
    results = {"facts": facts, "orbit": orbit, "latent": latent, "cli": cli}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_cpu_explorer.json").write_text(json.dumps(results, indent=1))

    size = args.resolution

    def row(name: str, s: dict, target: str = "", extra: str = "") -> str:
        return (f"| {name} | {s['median_ms']:.0f} | {s['p90_ms']:.0f} | {s['cpu_median_ms']:.0f} | {s['frames']} "
                f"| {target} | {extra} |")

    log()
    log(f"demo checkpoint, {size}x{size}, {facts['device']}, torch {facts['torch']} ({facts['torch_threads']} "
        f"threads), numba {facts['numba']}; backend {orbit['backend_report']}")
    log("| measurement | median ms | p90 ms | CPU ms (median) | n | target | notes |")
    log("|---|---|---|---|---|---|---|")
    c = orbit["compiled"]
    log(row(f"orbit frame, {size} px (compiled)", c, f"<= {TARGET_FRAME_MS:.0f} ms: "
            + ("met" if c["median_ms"] <= TARGET_FRAME_MS else "MISSED"), f"{1e3 / c['median_ms']:.1f} frames/s"))
    log(row(f"orbit frame, {orbit['preview_resolution']} px (drag preview)", orbit["preview"]))
    log(row(f"orbit frame, {size} px, reference rasterizer", orbit["reference"], "",
            f"ratio {orbit['ratio']:.1f}x (same {orbit['reference']['frames']} states, interleaved; "
            f"{orbit['compiled_beside_reference']['median_ms']:.0f} ms compiled beside it); "
            f"PSNR >= {orbit['psnr_uint8_db_min']:.1f} dB"))
    f = latent["fast"]
    log(row("latent change: generator + first frame", f, f"<= {TARGET_LATENT_S * 1e3:.0f} ms: "
            + ("met" if f["median_ms"] <= TARGET_LATENT_S * 1e3 else "MISSED"),
            f"generator {f['generator_median_ms']:.0f} ms, frame {f['frame_median_ms']:.0f} ms"))
    r = latent["reference_generator"]
    log(row("latent change, reference generator + rasterizer", r, "",
            f"generator {r['generator_median_ms']:.0f} ms ({latent['generator_ratio']:.1f}x the fast path's), "
            f"frame {r['frame_median_ms']:.0f} ms"))
    if cli:
        log(f"| `{cli['command']}` | {cli['median_s'] * 1e3:.0f} | - | - | {len(cli['seconds'])} | <= 30 s: "
            + ("met" if cli["median_s"] <= TARGET_CLI_S else "MISSED") + " | wall clock, process start to exit |")
    log()
    log(f"load: orbit {orbit['load_before']} -> {orbit['load_after']}; latent {latent['load_before']} -> "
        f"{latent['load_after']}" + (f"; gsgan-render {cli['load_before']} -> {cli['load_after']}" if cli else ""))


if __name__ == "__main__":
    main()
