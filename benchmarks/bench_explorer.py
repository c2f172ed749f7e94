"""Speed of the explorer's headless engine (no window; dearpygui is not needed).

    python benchmarks/bench_explorer.py [--out DIR] [--frames 200]

Cases, with their targets:
  orbit   lite512, 512x512: the camera moves every frame, the Gaussians come from the cache;
          a frame = rasterize + colour to uint8 + copy to the host.            target >= 200 frames/s
  live    lite256, 512x512: the interpolation slider moves every frame, so the generator reruns;
          a frame = mapping + synthesis + rasterize + copy.                    target >= 60 frames/s
          (one row per generator execution mode: fp32, tf32, bf16 autocast, CUDA graph + tf32)
  upload  the CPU side of showing a frame: uint8 [512, 512, 3] -> the float32 RGBA texture buffer.

Each frame is a real `Engine.frame(state)` call with a changed state, timed with the clock read
after the host copy (which synchronises). Warm-up first (gsplat's JIT compile, cuDNN/cuBLAS
choices, graph capture), then medians. Random weights with non-zero layerscales (as after
training; the compute is the same). Writes DIR/bench_explorer.json and .log; prints a table last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from explorer.texture import new_rgba_buffer, to_rgba
from gsgan_core.models import build_generator
from gsgan_core.models.config import preset
from gsgan_core.models.generator import randomize_layer_scales
from gsgan_core.render import backend_report
from gsgan_core.view.engine import Engine
from gsgan_core.view.state import ExplorerState
from gsgan_core.view.viewer_camera import viewer_cameras

from common import device_name, sync

TARGET_FPS = {"orbit": 200.0, "live": 60.0}
LOG: list[str] = []


def log(line: str) -> None:
    LOG.append(line)
    print(line, flush=True)


def random_generator(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_layer_scales(build_generator(preset(name))).eval().requires_grad_(False)


def timed_frames(engine: Engine, state: ExplorerState, change, frames: int, warmup: int) -> dict:
    """Calls engine.frame after `change(state, i)` for every frame; per-frame wall times."""
    for i in range(warmup):
        change(state, i)
        engine.frame(state)
    calls_before = engine.stats.generator_calls
    totals, generator, raster = [], [], []
    for i in range(warmup, warmup + frames):
        change(state, i)
        gen_calls = engine.stats.generator_calls
        start = time.perf_counter()
        frame = engine.frame(state)  # ends with the device -> host copy, so it is synchronised
        totals.append((time.perf_counter() - start) * 1e3)
        raster.append(engine.stats.render_ms)
        if engine.stats.generator_calls != gen_calls:
            generator.append(engine.stats.generator_ms)
    assert frame.image.shape == (state.render.resolution, state.render.resolution, 3)
    median = statistics.median(totals)
    return {
        "frames": frames,
        "median_ms": median,
        "p90_ms": float(np.percentile(totals, 90)),
        "fps_from_median": 1e3 / median,
        "fps_overall": 1e3 * frames / sum(totals),
        "generator_ms_median": statistics.median(generator) if generator else 0.0,
        "generator_runs": engine.stats.generator_calls - calls_before,
        "raster_copy_ms_median": statistics.median(raster),
        "gaussians": frame.num_gaussians,
    }


class FixedSceneEngine(Engine):
    """The engine with the generator's output replaced by a fixed scene (for orbit timing only:
    orbiting never runs the generator, so only the scene's layout matters)."""

    def __init__(self, scene, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scene = scene

    def _generate(self, latent):
        return self.scene


def orbit_case(device, frames: int, name: str = "lite512", size: int = 512, scene: str = "random",
               background: bool = True) -> dict:
    """scene "random": a random-weight generator's output (one dense blob: the rasterizer's worst
    case); "head": benchmarks/scenes.head_like (same hierarchy, laid out like a trained head)."""
    generator = random_generator(name).to(device)
    if scene == "head":
        from scenes import head_like

        engine = FixedSceneEngine(head_like(generator.config, 1, device).scene(0), device, precision="tf32",
                                  cuda_graph=False, direction_samples=512)
    else:
        engine = Engine(device, precision="tf32", cuda_graph=True, direction_samples=512)
    engine.set_generator(generator)
    state = ExplorerState()
    state.camera = engine.default_camera()
    state.render = dataclasses.replace(state.render, resolution=size)
    state.levels = dataclasses.replace(state.levels, background=background)

    def change(s, i):  # a new camera every frame: the frame cache misses
        s.camera = dataclasses.replace(s.camera, yaw=0.6 * np.sin(i * 0.05))

    row = timed_frames(engine, state, change, frames, warmup=20)
    assert row["generator_runs"] == 0, "orbiting must not rerun the generator"
    row["scene"] = scene + ("" if background else ", no background")
    row["gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    # What the rasterizer alone costs on the same Gaussians and cameras (no colour conversion, no copy).
    from gsgan_core.cameras import to_rasterizer
    from gsgan_core.render import render

    shown, _ = engine.shown_gaussians(state)
    cameras = [to_rasterizer(*viewer_cameras(dataclasses.replace(state.camera, yaw=0.6 * np.sin(i * 0.05)), device), size, size,
                             generator.config.camera_model)
               for i in range(frames)]
    samples = []
    with torch.inference_mode():
        for viewmats, Ks in cameras:
            sync(device)
            start = time.perf_counter()
            render(shown, viewmats[None], Ks[None], size, size, backend="auto")
            sync(device)
            samples.append((time.perf_counter() - start) * 1e3)
    row["rasterizer_only_ms_median"] = statistics.median(samples[5:] if len(samples) > 10 else samples)
    return row


def live_case(device, frames: int, precision: str, cuda_graph: bool, name: str = "lite256", size: int = 512) -> dict:
    engine = Engine(device, precision=precision, cuda_graph=cuda_graph, direction_samples=512)
    engine.set_generator(random_generator(name).to(device))
    if cuda_graph and engine.graph_problem:
        log(f"  CUDA graph unavailable: {engine.graph_problem}")
    state = ExplorerState()
    state.camera = engine.default_camera()
    state.render = dataclasses.replace(state.render, resolution=size)
    state.latent = dataclasses.replace(state.latent, seed_b=1)

    def change(s, i):  # a new latent every frame: the generator reruns
        s.latent = dataclasses.replace(s.latent, interp=(i % 100) / 100 + 1e-4)

    row = timed_frames(engine, state, change, frames, warmup=10)
    assert row["generator_runs"] == frames
    row["precision"] = precision + (" + CUDA graph" if engine._graphed is not None else "")
    return row


def upload_case(frames: int) -> dict:
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    buffer = new_rgba_buffer(512, 512)
    for _ in range(10):
        to_rgba(image, buffer)
    samples = []
    for _ in range(frames):
        start = time.perf_counter()
        to_rgba(image, buffer)
        samples.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(samples), "cpu": platform.processor() or platform.machine()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--cpu-smoke", action="store_true", help="run every code path on CPU with the tiny preset (a test, not a benchmark)")
    args = parser.parse_args()
    if args.cpu_smoke:
        device = torch.device("cpu")
        orbit = [orbit_case(device, 2, "tiny", 32), orbit_case(device, 2, "tiny", 32, scene="head", background=False)]
        live = live_case(device, 2, "fp32", False, "tiny", 32)
        upload = upload_case(2)
        print(json.dumps({"orbit": orbit, "live": live, "upload": upload}))
        return 0
    if not torch.cuda.is_available():
        print("bench_explorer needs a CUDA GPU (the engine itself also runs on CPU)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log(f"device: {device_name(device)}; torch {torch.__version__}; render: {backend_report(device)}")
    log(f"gsplat probe/compile took {time.perf_counter() - start:.1f} s")

    results = {"device": device_name(device), "torch": torch.__version__}
    results["orbit"] = []
    for scene, background in (("random", True), ("random", False), ("head", True), ("head", False)):
        row = orbit_case(device, args.frames, scene=scene, background=background)
        results["orbit"].append(row)
        log("orbit " + json.dumps(row))
        torch.cuda.empty_cache()
    results["live"] = []
    for precision, graph in (("fp32", False), ("tf32", False), ("bf16", False), ("tf32", True)):
        row = live_case(device, args.frames, precision, graph)
        results["live"].append(row)
        log("live " + json.dumps(row))
        torch.cuda.empty_cache()
    results["upload"] = upload_case(args.frames)
    log("upload " + json.dumps(results["upload"]))

    (args.out / "bench_explorer.json").write_text(json.dumps(results, indent=1))
    table = [
        "",
        "| case | preset | res | mode / scene | Gaussians | frame ms (median) | p90 ms | frames/s | generator ms | raster+copy ms | rasterizer only ms | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in results["orbit"]:
        table.append(
            f"| orbit (cached Gaussians) | lite512 | 512 | {o['scene']} | {o['gaussians']:,} | {o['median_ms']:.2f} | "
            f"{o['p90_ms']:.2f} | {o['fps_from_median']:.0f} | - | {o['raster_copy_ms_median']:.2f} | "
            f"{o['rasterizer_only_ms_median']:.2f} | >= {TARGET_FPS['orbit']:.0f} fps |"
        )
    for r in results["live"]:
        table.append(
            f"| live latent edit | lite256 | 512 | {r['precision']} | {r['gaussians']:,} | {r['median_ms']:.2f} | "
            f"{r['p90_ms']:.2f} | {r['fps_from_median']:.0f} | {r['generator_ms_median']:.2f} | "
            f"{r['raster_copy_ms_median']:.2f} | - | >= {TARGET_FPS['live']:.0f} fps |"
        )
    u = results["upload"]
    table.append(f"| texture upload, CPU side | - | 512 | uint8 -> float32 RGBA | - | {u['median_ms']:.3f} | - | - | - | - | - | (measured) |")
    for line in table:
        log(line)
    (args.out / "bench_explorer.log").write_text("\n".join(LOG) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
