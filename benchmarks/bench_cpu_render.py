"""CPU rasterizers side by side on the demo head: the PyTorch reference and the compiled (Numba) one.

    python benchmarks/bench_cpu_render.py [--sizes 256,128] [--views 8] [--rounds 3] [--ref-frames 3]
                                          [--threads 2,1] [--out DIR] [--skip-compile-times]

What it renders: the demo checkpoint (assets/heads128.safetensors, every level: 87,296 Gaussians),
seed 0, psi 0.7, from `--views` cameras on an orbit around the checkpoint's default pose (yaw
spread over +-60 degrees, pitch +-10), at each size. Everything on the CPU, in inference mode.

Rows, per size:
  reference   render(..., backend="reference") (pure PyTorch), `--ref-frames` views.
  compiled    render(..., backend="compiled") with numba.set_num_threads(T), for each T of
              --threads; every view, `--rounds` times.
  viewer      what a viewer frame costs with backend="auto": camera -> render -> clamp -> uint8
              numpy image (the explorer engine's _render: torch ops), with the default thread count.
  viewer, numpy uint8   the same with the clamp and uint8 conversion done in numpy: PyTorch's
              element-wise ops run on 2 intra-op threads and wait for both, which costs tens of ms
              per frame when other jobs load the machine.
Each frame is timed on the wall clock and on the process's CPU clock (all threads). On a machine
shared with other jobs the wall clock swings with their load; the CPU time, the medians and the
load average printed with them say how much. ratio = reference median / compiled median, both
measured in this run, with the default thread count; the same frames also give the PSNR of the
compiled images against the reference (>= 40 dB is the bar).

C++ candidate (unless --skip-cpp; needs g++): the compositing stage, most of a frame's time, also
written in C++ with OpenMP and fed the same tile lists, timed alternately with Numba's.

Compile times (unless --skip-compile-times): two fresh processes with an empty NUMBA_CACHE_DIR:
the first compiles the kernels and writes the cache (cold), the second loads them (warm); each
reports import + first render of a small scene, then a second render.

Writes DIR/bench_cpu_render.json when --out is given; prints a table last.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gsgan_core.cameras import orbit_camera, to_rasterizer
from gsgan_core.io.checkpoint import load_checkpoint
from gsgan_core.models.generator import z_from_seeds
from gsgan_core.render import backend_report, render

from common import summary, timed

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "heads128.safetensors"
TARGET_MS = 100.0  # the explorer's CPU target: orbiting the demo at 256x256, median frame <= 100 ms on 2 cores


def log(line: str = "") -> None:
    print(line, flush=True)


def demo_scene(seed: int, psi: float):
    G, info = load_checkpoint(DEMO)
    with torch.inference_mode():
        gaussians = G(z_from_seeds([seed], info.config.z_dim), psi=psi).scene(0)
    return gaussians, info


def orbit_views(info, views: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pose = info.camera
    out = []
    for i in range(views):
        u = i / max(views - 1, 1)
        yaw = pose.yaw + math.radians(-60 + 120 * u)
        pitch = pose.pitch + math.radians(10 * math.sin(2 * math.pi * u))
        cam2world, K_norm = orbit_camera(yaw, pitch, pose.radius, pose.pivot, pose.fov_deg, dtype=torch.float32)
        viewmat, K = to_rasterizer(cam2world, K_norm, size, size, info.config.camera_model)
        out.append((viewmat[None], K[None]))
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def bench_size(gaussians, info, size: int, args, threads: list[int]) -> dict:
    import numba

    views = orbit_views(info, args.views, size)
    bg = (1.0, 1.0, 1.0)
    default_threads = numba.config.NUMBA_NUM_THREADS
    result: dict = {"size": size, "views": args.views, "loadavg_before": os.getloadavg()}

    def draw(view, backend):
        return render(gaussians, *view, size, size, background=bg, backend=backend)

    with torch.inference_mode():
        numba.set_num_threads(default_threads)
        for view in views[:2]:  # warm-up: kernels loaded, caches filled
            draw(view, "compiled")
        # Reference and compiled interleaved view by view, so that both see the same load.
        ref_w, ref_c, cmp_w, cmp_c, rgb_db, alpha_db = [], [], [], [], [], []
        for view in views[: args.ref_frames]:
            w, c, ref = timed(lambda: draw(view, "reference"))
            ref_w.append(w)
            ref_c.append(c)
            w, c, fast = timed(lambda: draw(view, "compiled"))
            cmp_w.append(w)
            cmp_c.append(c)
            rgb_db.append(psnr(fast.rgb.clamp(0, 1), ref.rgb.clamp(0, 1)))
            alpha_db.append(psnr(fast.alpha, ref.alpha))
        result["reference"] = summary(ref_w, ref_c)
        result["compiled_beside_reference"] = summary(cmp_w, cmp_c)
        result["psnr_rgb_db_min"] = min(rgb_db)
        result["psnr_alpha_db_min"] = min(alpha_db)

        result["compiled"] = {}
        for T in threads:
            numba.set_num_threads(T)
            walls, cpus = [], []
            for _ in range(args.rounds):
                for view in views:
                    w, c, _out = timed(lambda: draw(view, "compiled"))
                    walls.append(w)
                    cpus.append(c)
            result["compiled"][T] = summary(walls, cpus)
        numba.set_num_threads(default_threads)

        def viewer_frame(view):  # the explorer engine's _render, minus its caches
            out = render(gaussians, *view, size, size, background=torch.tensor(bg), backend="auto")
            return (out.rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()

        def viewer_frame_numpy(view):  # the same, with the uint8 conversion in numpy (one thread)
            out = render(gaussians, *view, size, size, background=torch.tensor(bg), backend="auto")
            rgb = out.rgb[0].numpy()
            return (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)

        for name, fn in (("viewer", viewer_frame), ("viewer_numpy_uint8", viewer_frame_numpy)):
            walls, cpus = [], []
            for _ in range(args.rounds):
                for view in views:
                    w, c, image = timed(lambda: fn(view))
                    walls.append(w)
                    cpus.append(c)
            assert image.shape == (size, size, 3) and image.dtype == np.uint8
            result[name] = summary(walls, cpus)

    at_default = result["compiled"].get(default_threads)  # None when --threads leaves the default out
    result["ratio"] = result["reference"]["median_ms"] / at_default["median_ms"] if at_default else None
    result["ratio_beside"] = result["reference"]["median_ms"] / result["compiled_beside_reference"]["median_ms"]
    result["loadavg_after"] = os.getloadavg()
    return result


# ------------------------------------------------------------------------------------------ C++ candidate
# The same compositing loop as gsgan_core/render/compiled.py's _composite / _composite_tile, in C++
# with OpenMP (g++ -O3 -march=native, no fast-math), fed the same tile lists: how much a hand-written
# compiled path would gain over Numba on the stage that takes most of the time. Benchmark only:
# shipping it would need a C++ compiler on every user's machine, or per-platform wheels.
CPP_SOURCE = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <omp.h>
extern "C" void composite(const float* packed, const int64_t* offsets, const int32_t* lists, const float* bg,
                          int width, int height, int tiles_x, int n_tiles, int threads,
                          float* out_rgb, float* out_alpha, float* out_depth) {
  omp_set_num_threads(threads);
  #pragma omp parallel for schedule(dynamic, 2)
  for (int t = 0; t < n_tiles; ++t) {
    const int ty = t / tiles_x, tx = t % tiles_x, px0 = tx * 16, py0 = ty * 16;
    const int pw = std::min(16, width - px0), ph = std::min(16, height - py0);
    float T[256], acc[4][256];
    int alive[16];
    for (int i = 0; i < 256; ++i) { T[i] = 1.f; acc[0][i] = acc[1][i] = acc[2][i] = acc[3][i] = 0.f; }
    for (int i = 0; i < 16; ++i) alive[i] = i < ph ? pw : 0;
    int remaining = pw * ph;
    const float cx0 = (float)px0 + 0.5f, cy0 = (float)py0 + 0.5f;
    for (int64_t k = offsets[t]; k < offsets[t + 1]; ++k) {
      const float* r = packed + (int64_t)lists[k] * 16;
      const float mx = r[0] - cx0, my = r[1] - cy0, ca = r[2], cb = r[3], cc = r[4], op = r[5], l2 = r[10];
      const int gx0 = std::max((int)r[11] - px0, 0), gx1 = std::min((int)r[13] - px0, pw - 1);
      const int gy0 = std::max((int)r[12] - py0, 0), gy1 = std::min((int)r[14] - py0, ph - 1);
      const bool narrow = gx1 - gx0 < 3;
      const float inv_ca = 1.f / ca, hca = 0.5f * ca;
      for (int ly = gy0; ly <= gy1; ++ly) {
        if (alive[ly] == 0) continue;
        const float dy = my - (float)ly, cbdy = cb * dy;
        int xs = gx0, xe = gx1;
        if (!narrow) {
          const float disc = cbdy * cbdy - ca * (cc * dy * dy - l2);
          if (disc < 0.f) continue;
          const float s = std::sqrt(disc);
          float lo = mx + (cbdy - s) * inv_ca, hi = mx + (cbdy + s) * inv_ca;
          lo = lo > -2.f ? lo : -2.f; lo = lo < 18.f ? lo : 18.f;
          hi = hi < 18.f ? hi : 18.f; hi = hi > -2.f ? hi : -2.f;
          xs = std::max(gx0, 64 - (int)(64.f - lo));
          xe = std::min(gx1, (int)(hi + 64.f) - 64);
        }
        const float hcdy2 = 0.5f * cc * dy * dy;
        const int row = ly * 16;
        for (int lx = xs; lx <= xe; ++lx) {
          const int p = row + lx;
          const float Tp = T[p];
          if (Tp < 0.f) continue;
          const float dx = mx - (float)lx;
          const float sigma = (hca * dx + cbdy) * dx + hcdy2;
          if (sigma < 0.f) continue;
          const float alpha = std::min(0.999f, op * std::exp(-sigma));
          if (alpha < 1.f / 255.f) continue;
          const float next_T = Tp * (1.f - alpha);
          if (next_T <= 1e-4f) { T[p] = -Tp; --alive[ly]; --remaining; continue; }
          const float w = alpha * Tp;
          acc[0][p] += w * r[6]; acc[1][p] += w * r[7]; acc[2][p] += w * r[8]; acc[3][p] += w * r[9];
          T[p] = next_T;
        }
      }
      if (remaining == 0) break;
    }
    for (int ly = 0; ly < ph; ++ly)
      for (int lx = 0; lx < pw; ++lx) {
        const int p = ly * 16 + lx;
        const float Tp = std::fabs(T[p]), a = 1.f - Tp;
        const int64_t o = (int64_t)(py0 + ly) * width + px0 + lx;
        out_rgb[3 * o] = acc[0][p] + Tp * bg[0];
        out_rgb[3 * o + 1] = acc[1][p] + Tp * bg[1];
        out_rgb[3 * o + 2] = acc[2][p] + Tp * bg[2];
        out_alpha[o] = a;
        out_depth[o] = acc[3][p] / std::max(a, 1e-10f);
      }
  }
}
"""


def build_cpp(folder: Path):
    """The C++ compositing kernel as a ctypes library, or None (and why) where g++ is missing or fails."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return None, "no C++ compiler on PATH"
    src, lib = folder / "composite.cpp", folder / "composite.so"
    src.write_text(CPP_SOURCE)
    start = time.perf_counter()
    proc = subprocess.run([compiler, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(lib), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"g++ failed: {proc.stderr.strip()[:300]}"
    dll = ctypes.CDLL(str(lib))
    dll.composite.restype = None
    return dll, f"{Path(compiler).name} -O3 -march=native -fopenmp, built in {time.perf_counter() - start:.1f} s"


def composite_stage_inputs(gaussians, view, size: int):
    """What the compiled rasterizer's compositing stage gets for one frame (projection, sort and
    binning done by gsgan_core.render.compiled)."""
    from gsgan_core.render import compiled as C

    arrays = [C._np32(t) for t in (gaussians.means, gaussians.log_scales, gaussians.quats,
                                   gaussians.opacity_logits, gaussians.sh_dc)]
    viewmat = view[0][0].double().numpy()
    K = view[1][0].double().numpy()
    n = arrays[0].shape[0]
    records = np.empty((n, C._NFIELDS), np.float32)
    depths = np.empty(n, np.float32)
    drawn = np.empty(n, np.bool_)
    C._project(*arrays, viewmat, K, size, size, 0.01, 1e10, C.EPS2D, records, depths, drawn)
    tiles = -(-size // C.TILE_SIZE)
    packed, offsets, lists = C._sort_and_bin(records, depths, drawn, tiles, tiles)
    return packed.copy(), offsets, lists, tiles  # a copy: the next frame reuses the scratch buffer


def bench_composite_stage(gaussians, info, size: int, threads: int, frames: int, dll) -> dict:
    """Numba's compositing stage against the C++ one, alternating on the same inputs."""
    import numba

    from gsgan_core.render import compiled as C

    bg = np.ones(3, np.float32)
    views = orbit_views(info, frames, size)
    numba.set_num_threads(threads)
    times = {"numba": ([], []), "cpp": ([], [])}
    worst_db = float("inf")
    for view in views:
        packed, offsets, lists, tiles = composite_stage_inputs(gaussians, view, size)
        outs = {name: (np.empty((size, size, 3), np.float32), np.empty((size, size, 1), np.float32),
                       np.empty((size, size, 1), np.float32)) for name in times}

        def run_numba():
            C._composite(packed, offsets, lists, bg, size, size, tiles, threads, *outs["numba"])

        def run_cpp():
            ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
            dll.composite(ptr(packed), ptr(offsets), ptr(lists), ptr(bg), size, size, tiles, tiles * tiles, threads,
                          *(ptr(a) for a in outs["cpp"]))

        run_numba()
        run_cpp()  # warm-up (and OpenMP's pool)
        for _ in range(3):
            for name, fn in (("numba", run_numba), ("cpp", run_cpp)):
                w, c, _ = timed(fn)
                times[name][0].append(w)
                times[name][1].append(c)
        worst_db = min(worst_db, psnr(torch.from_numpy(outs["cpp"][0]), torch.from_numpy(outs["numba"][0])))
    out = {name: summary(*t) for name, t in times.items()}
    out["threads"] = threads
    out["psnr_cpp_vs_numba_db"] = worst_db
    return out


COMPILE_PROBE = r"""
import json, time
t0 = time.perf_counter()
import torch
from gsgan_core.gaussians import Gaussians
from gsgan_core.render import render
t1 = time.perf_counter()
g = torch.Generator().manual_seed(0)
n = 2000
scene = Gaussians(means=torch.randn(n, 3, generator=g) * 0.3, log_scales=torch.full((n, 3), -4.0),
                  quats=torch.randn(n, 4, generator=g), opacity_logits=torch.zeros(n), sh_dc=torch.zeros(n, 3),
                  level=torch.zeros(n, dtype=torch.long), parent=torch.full((n,), -1, dtype=torch.long))
viewmats = torch.eye(4)[None].clone(); viewmats[0, 2, 3] = 2.7
Ks = torch.tensor([[[300.0, 0, 64], [0, 300.0, 64], [0, 0, 1]]])
with torch.inference_mode():
    t2 = time.perf_counter(); render(scene, viewmats, Ks, 128, 128, backend="compiled"); t3 = time.perf_counter()
    render(scene, viewmats, Ks, 128, 128, backend="compiled"); t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_render_s": t3 - t2, "second_render_s": t4 - t3}))
"""


def compile_times() -> dict:
    """Cold (empty cache: compile and write it) and warm (cache on disk) first calls, each in a
    fresh process."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="gsgan-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for name in ("cold", "warm"):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", COMPILE_PROBE], env=env, cwd=ROOT, capture_output=True,
                                  text=True, check=True)
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            out[name]["process_s"] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,128", help="image sizes (square), comma-separated")
    p.add_argument("--views", type=int, default=8, help="orbit views per size")
    p.add_argument("--rounds", type=int, default=3, help="passes over the views for the compiled rows")
    p.add_argument("--ref-frames", type=int, default=3, help="views rendered by the reference (slow)")
    p.add_argument("--threads", default=None, help="numba thread counts to time, e.g. 2,1 (default: all, then 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--psi", type=float, default=0.7)
    p.add_argument("--skip-compile-times", action="store_true")
    p.add_argument("--skip-cpp", action="store_true", help="leave out the C++ compositing candidate")
    p.add_argument("--out", default=None, help="folder for bench_cpu_render.json")
    args = p.parse_args(argv)

    import numba

    sizes = [int(s) for s in args.sizes.split(",")]
    all_threads = numba.config.NUMBA_NUM_THREADS
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else sorted({all_threads, 1}, reverse=True))
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "numba": numba.__version__, "numba_threads": all_threads,
        "auto_backend": backend_report("cpu", needs_grad=False),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    log(json.dumps(meta))
    start = time.perf_counter()
    gaussians, info = demo_scene(args.seed, args.psi)
    meta["gaussians"] = gaussians.num_gaussians
    meta["generator_s"] = time.perf_counter() - start
    log(f"demo: {DEMO.name}, {gaussians.num_gaussians:,} Gaussians (generated in {meta['generator_s']:.2f} s)")

    results = {"meta": meta, "sizes": []}
    if not args.skip_compile_times:
        results["compile"] = compile_times()
        log(f"compile times: {json.dumps(results['compile'])}")
    for size in sizes:
        r = bench_size(gaussians, info, size, args, threads)
        results["sizes"].append(r)
        log(json.dumps(r))
    if not args.skip_cpp:
        with tempfile.TemporaryDirectory(prefix="gsgan-cpp-") as folder:
            dll, how = build_cpp(Path(folder))
            results["cpp"] = {"build": how, "stages": []}
            log(f"C++ candidate: {how}")
            if dll is not None:
                for size in sizes:
                    for T in threads:
                        r = bench_composite_stage(gaussians, info, size, T, min(args.views, 4), dll)
                        r["size"] = size
                        results["cpp"]["stages"].append(r)
                        log(json.dumps(r))

    log()
    log(f"load average before/after each size is in the JSON; machine: {meta['machine']}; {meta['auto_backend']}")
    log("| size | rasterizer | frames | median ms | p90 ms | CPU ms (all threads) | ratio to reference |")
    log("|---|---|---|---|---|---|---|")
    for r in results["sizes"]:
        s = r["size"]
        ref = r["reference"]
        log(f"| {s} | reference (PyTorch) | {ref['frames']} | {ref['median_ms']:.1f} | {ref['p90_ms']:.1f} | "
            f"{ref['cpu_median_ms']:.1f} | 1 |")
        for T, row in r["compiled"].items():
            log(f"| {s} | compiled (Numba), {T} thread{'s' if T != 1 else ''} | {row['frames']} | "
                f"{row['median_ms']:.1f} | {row['p90_ms']:.1f} | {row['cpu_median_ms']:.1f} | "
                f"{ref['median_ms'] / row['median_ms']:.0f}x |")
        for key, label in (("viewer", "viewer frame (auto, torch uint8)"),
                           ("viewer_numpy_uint8", "viewer frame (auto, numpy uint8)")):
            v = r[key]
            log(f"| {s} | {label} | {v['frames']} | {v['median_ms']:.1f} | {v['p90_ms']:.1f} | "
                f"{v['cpu_median_ms']:.1f} | {ref['median_ms'] / v['median_ms']:.0f}x |")
    log()
    for r in results["sizes"]:
        log(f"{r['size']}x{r['size']}: PSNR compiled vs reference >= {r['psnr_rgb_db_min']:.1f} dB rgb, "
            f">= {r['psnr_alpha_db_min']:.1f} dB alpha; ratio (interleaved frames) {r['ratio_beside']:.0f}x; "
            f"load {r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}")
    if results.get("cpp", {}).get("stages"):
        log()
        log(f"compositing stage alone (same tile lists), Numba vs C++ ({results['cpp']['build']}):")
        log("| size | threads | Numba median ms | C++ median ms | Numba CPU ms | C++ CPU ms | C++ / Numba | PSNR C++ vs Numba |")
        log("|---|---|---|---|---|---|---|---|")
        for r in results["cpp"]["stages"]:
            nb_, cp = r["numba"], r["cpp"]
            log(f"| {r['size']} | {r['threads']} | {nb_['median_ms']:.1f} | {cp['median_ms']:.1f} | "
                f"{nb_['cpu_median_ms']:.1f} | {cp['cpu_median_ms']:.1f} | {cp['median_ms'] / nb_['median_ms']:.2f} | "
                f"{r['psnr_cpp_vs_numba_db']:.0f} dB |")
    at256 = [r for r in results["sizes"] if r["size"] == 256]
    for key in ("viewer", "viewer_numpy_uint8") if at256 else ():
        v = at256[0][key]["median_ms"]
        log(f"target: {key.replace('_', ' ')} frame at 256x256 <= {TARGET_MS:.0f} ms median: {v:.1f} ms "
            f"({'met' if v <= TARGET_MS else 'missed'})")
    if "compile" in results:
        c = results["compile"]
        log(f"first call, cold cache: {c['cold']['first_render_s']:.1f} s (import {c['cold']['import_s']:.1f} s); "
            f"warm cache: {c['warm']['first_render_s']:.2f} s (import {c['warm']['import_s']:.1f} s)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_cpu_render.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
