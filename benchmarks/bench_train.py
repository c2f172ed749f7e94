"""Training throughput and peak memory of `gsgan-train` on one GPU, and how far a step is from its floor.

    python benchmarks/bench_train.py --out DIR [--preset ffhq256] [--batch 32] [--steps 74]

1. Renders a procedural heads dataset (RGBA, EG3D labels) at the training resolution.
2. Components at the training batch, each warmed up and synchronised, medians: generator forward,
   rasterizer forward and forward+backward (gsplat), generator+rasterizer forward+backward,
   discriminator forward+backward, R1 double-backward; FLOPs of G and D forward (FlopCounterMode).
3. The real training loop (`gsgan_core.train.train`, reference hyperparameters, lazy R1 every 16 steps)
   for --steps steps; per-step wall times come from its JSONL log (the loop synchronises every step).
   Reports images/s and kimg/hour with and without the R1 steps counted, and peak GPU memory; the
   D and R1 components also report their peak memory on their first call and once warm.
4. Floor: the sum of the component times a step must run (2x G forward, 1x G backward, 3 renders,
   2 render backwards, D on 3 batches with backward) and the FLOP floor at the device's TF32 peak.

Full logs and JSON go under --out; a short table is printed last. `--device cpu --preset tiny
--resolution 32 --batch 4 --steps 4` is a smoke test without a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from gsgan_core.cameras import camera_forward, sample_ffhq_like, to_rasterizer
from gsgan_core.data.heads import make_heads_dataset
from gsgan_core.models.config import preset
from gsgan_core.models.discriminator import Discriminator
from gsgan_core.models import build_generator
from gsgan_core.models.generator import randomize_layer_scales
from gsgan_core.render import backend_report, render
from gsgan_core.train import losses
from gsgan_core.train.config import TrainConfig
from gsgan_core.train.loop import train

from common import device_name, median_ms, sync

# Dense TF32 tensor-core peaks (FLOP/s) from NVIDIA's data sheets, SXM parts.
TF32_PEAK = {"H100": 494.7e12, "H200": 494.7e12}


def peak_gb(fn, device) -> float:
    """GPU memory one call of fn allocates at its peak, above what was allocated before it (NaN on CPU).

    Its first call also holds cuDNN's algorithm search (cudnn.benchmark tries each candidate with its
    workspace): measured once before a component's warm-up and once after, the two tell that apart
    from the tensors the call itself keeps alive."""
    if device.type != "cuda":
        return float("nan")
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**30


def forward_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def components(preset_name: str, resolution: int, batch: int, device: torch.device, iters: int) -> dict:
    torch.manual_seed(0)
    G = randomize_layer_scales(build_generator(preset(preset_name, image_resolution=resolution, c_dim=25))).to(device)
    D = Discriminator(resolution, "contrastive").to(device)
    z = torch.randn(batch, G.config.z_dim, device=device)
    cam2world, K = sample_ffhq_like(batch, generator=torch.Generator().manual_seed(0))
    labels = torch.cat([cam2world.flatten(1), K.flatten(1)], dim=1).to(device)
    cam2world, K = cam2world.to(device), K.to(device)
    viewmats, Ks = to_rasterizer(cam2world, K, resolution, resolution, G.config.camera_model)
    viewmats, Ks = viewmats[:, None], Ks[:, None]
    background = torch.rand(batch, 1, 3, device=device)

    def ms(fn) -> float:
        return median_ms(fn, device, iters, warmup=3)

    def g_forward():
        return G.synthesize(G.mapping(z, labels), camera_forward(cam2world), return_anchors=True)

    def images_of(gaussians):
        rgb = render(gaussians, viewmats, Ks, resolution, resolution, background=background).rgb
        return rgb.flatten(0, 1).permute(0, 3, 1, 2) * 2 - 1

    out = {"gaussians_per_scene": G.config.num_gaussians}
    with torch.no_grad():
        out["G_forward_ms"] = ms(g_forward)
        gaussians = g_forward()[0]
        out["render_forward_ms"] = ms(lambda: images_of(gaussians))
        fakes = images_of(gaussians)

    leaves = gaussians.detach()
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh_dc"):
        getattr(leaves, name).requires_grad_(True)
    out["render_forward_backward_ms"] = ms(lambda: images_of(leaves).square().mean().backward())
    out["G_render_forward_backward_ms"] = ms(lambda: images_of(g_forward()[0]).square().mean().backward())

    def d_step():
        result = D(fakes, labels)
        (result.logits.mean() + losses.infonce_pose_loss(result.image_pose, result.camera_pose)).backward()

    out["D_step_first_call_peak_gb"] = peak_gb(d_step, device)
    out["D_forward_backward_ms"] = ms(d_step)
    out["D_step_peak_gb"] = peak_gb(d_step, device)

    def r1_step():
        reals = fakes.detach().requires_grad_(True)
        logits = D(reals, labels).logits
        losses.r1_penalty(reals, logits).mean().backward()

    out["D_r1_first_call_peak_gb"] = peak_gb(r1_step, device)
    out["D_r1_ms"] = ms(r1_step)
    out["D_r1_peak_gb"] = peak_gb(r1_step, device)
    if device.type == "cuda":  # where the R1 double backward spends its time, for the log
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            r1_step()
            sync(device)
        out["r1_profile"] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
    with torch.no_grad():
        out["G_forward_gflop"] = forward_flops(g_forward) / 1e9
        out["D_forward_gflop"] = forward_flops(lambda: D(fakes, labels)) / 1e9
    if device.type == "cuda":
        out["render_backend"] = backend_report(device)
    return out  # G and D are freed with this frame


def training_run(data: str, outdir: str, args, device: torch.device) -> dict:
    config = TrainConfig(
        data=data, outdir=outdir, preset=args.preset, batch=args.batch, kimg=1e6, snap_kimg=1e6, log_steps=1,
        max_steps=args.steps, workers=args.workers, device=device.type, grid_seeds=4,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    train(config)
    wall = time.perf_counter() - start
    log = [json.loads(line) for line in (Path(outdir) / "log.jsonl").read_text().splitlines()]
    log = [r for r in log if "loss/G" in r]
    times = [log[0]["time_s"]] + [b["time_s"] - a["time_s"] for a, b in zip(log, log[1:])]  # per step
    steps = [(r["step"] - 1, t) for r, t in zip(log, times)][args.warmup:]  # (step index, seconds)
    plain = [t for s, t in steps if s % config.r1_interval]
    with_r1 = [t for s, t in steps if s % config.r1_interval == 0]
    plain_ms = statistics.median(plain) * 1e3
    r1_ms = statistics.median(with_r1) * 1e3 if with_r1 else float("nan")
    interval = config.r1_interval
    mean_ms = ((interval - 1) * plain_ms + r1_ms) / interval if with_r1 else plain_ms
    return {
        "steps_timed": len(steps), "r1_steps_timed": len(with_r1),
        "step_ms_median_no_r1": plain_ms, "step_ms_median_r1": r1_ms, "step_ms_mean_with_r1": mean_ms,
        "images_per_s_no_r1": args.batch / plain_ms * 1e3, "images_per_s_with_r1": args.batch / mean_ms * 1e3,
        "kimg_per_hour_no_r1": args.batch / plain_ms * 3600, "kimg_per_hour_with_r1": args.batch / mean_ms * 3600,
        "peak_gpu_mem_gb": log[-1].get("gpu_mem_gb", float("nan")), "wall_s_including_setup": wall,
        "final_losses": {k: log[-1][k] for k in ("loss/G", "loss/D")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--preset", default="ffhq256")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=74, help="training steps (R1 every 16th)")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of the medians")
    parser.add_argument("--iters", type=int, default=10, help="repetitions of each component timing")
    parser.add_argument("--images", type=int, default=512, help="size of the heads dataset")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("bench_train needs a CUDA GPU (or --device cpu for a smoke test)", file=sys.stderr)
            return 2
        torch.backends.cuda.matmul.allow_tf32 = True  # as training does
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    name = device_name(device)
    print(f"device: {name}; torch {torch.__version__}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    start = time.perf_counter()
    make_heads_dataset(work / "heads.zip", args.images, args.resolution, seed=0, progress=False)
    dataset_s = time.perf_counter() - start
    print(f"heads dataset: {args.images} images at {args.resolution} in {dataset_s:.1f} s", flush=True)

    start = time.perf_counter()
    parts = components(args.preset, args.resolution, args.batch, device, args.iters)
    parts["components_wall_s"] = time.perf_counter() - start  # includes gsplat's first-use compile
    r1_profile = parts.pop("r1_profile", "")
    (args.out / "r1_profile.txt").write_text(r1_profile)
    print(json.dumps(parts, indent=1), flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    run = training_run(str(work / "heads.zip"), str(args.out / "run"), args, device)
    print(json.dumps(run, indent=1), flush=True)

    # The floor: what one step must compute, from the components measured alone.
    g_fwd, g_bwd = parts["G_forward_ms"], parts["G_render_forward_backward_ms"] - parts["G_forward_ms"] - parts["render_forward_ms"]
    floor_ms = (parts["G_render_forward_backward_ms"]  # G phase: G + render, forward and backward
                + parts["D_forward_backward_ms"]  # G phase: D forward + backward to the images
                + g_fwd + parts["render_forward_ms"]  # D phase: fakes again, no grad
                + 2 * parts["D_forward_backward_ms"])  # D phase: fakes and reals
    flops_step = (4 * parts["G_forward_gflop"] + 9 * parts["D_forward_gflop"]) * 1e9  # fwd + 2x bwd (+ G re-run)
    peak = next((v for k, v in TF32_PEAK.items() if k in name), None)
    flop_floor_ms = flops_step / peak * 1e3 if peak else float("nan")
    summary = {
        "device": name, "torch": torch.__version__, "preset": args.preset, "resolution": args.resolution,
        "batch": args.batch, "dataset_s": dataset_s, "components": parts, "training": run,
        "floor_components_ms": floor_ms, "G_backward_ms_est": g_bwd,
        "flops_per_step_tflop": flops_step / 1e12, "flop_floor_ms_tf32": flop_floor_ms,
        "command": " ".join(sys.argv),
    }
    (args.out / "bench_train.json").write_text(json.dumps(summary, indent=2))

    rows = [
        ("device", name),
        ("preset / resolution / batch", f"{args.preset} / {args.resolution} / {args.batch}"),
        ("Gaussians per scene", f"{parts['gaussians_per_scene']:,}"),
        ("step, median, no R1 (ms)", f"{run['step_ms_median_no_r1']:.1f}"),
        ("step with R1, median (ms)", f"{run['step_ms_median_r1']:.1f}"),
        ("images/s (no R1 / R1 counted)", f"{run['images_per_s_no_r1']:.1f} / {run['images_per_s_with_r1']:.1f}"),
        ("kimg/hour (no R1 / R1 counted)", f"{run['kimg_per_hour_no_r1']:.1f} / {run['kimg_per_hour_with_r1']:.1f}"),
        ("peak GPU memory (GB)", f"{run['peak_gpu_mem_gb']:.2f}"),
        ("D step peak GB: first call / warm", f"{parts['D_step_first_call_peak_gb']:.2f} / {parts['D_step_peak_gb']:.2f}"),
        ("R1 step peak GB: first call / warm", f"{parts['D_r1_first_call_peak_gb']:.2f} / {parts['D_r1_peak_gb']:.2f}"),
        ("G forward (ms)", f"{parts['G_forward_ms']:.1f}"),
        ("render fwd / fwd+bwd (ms)", f"{parts['render_forward_ms']:.1f} / {parts['render_forward_backward_ms']:.1f}"),
        ("G+render fwd+bwd (ms)", f"{parts['G_render_forward_backward_ms']:.1f}"),
        ("D fwd+bwd / R1 (ms)", f"{parts['D_forward_backward_ms']:.1f} / {parts['D_r1_ms']:.1f}"),
        ("G / D forward GFLOP", f"{parts['G_forward_gflop']:.1f} / {parts['D_forward_gflop']:.1f}"),
        ("floor from components (ms)", f"{floor_ms:.1f}"),
        ("FLOP floor at TF32 peak (ms)", f"{flop_floor_ms:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
