"""Generator + rasterizer speed and peak memory for the reference presets, on one CUDA GPU.

    python benchmarks/bench_core.py [--out DIR] [--iters 50] [--presets ffhq256,ffhq512,lite256,lite512]

For ffhq256 / lite256 at 256x256 and ffhq512 / lite512 at 512x512 (ffhq*: the official GSGAN
architecture, lite*: the lite one), batch 1 and 8, random weights (layerscales switched on so every
block works as after training): the time to generate Gaussians from z (mapping, conditioned on the
camera label where the preset's mapping is, + synthesis) in several execution modes, the time to
rasterize them with gsplat (one camera per scene, the preset's camera model), and the peak GPU
memory of generate + render. Medians after warm-up, synchronised. Prints a table last; writes the
raw numbers as JSON to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from gsgan_core.cameras import cameras_to_labels, orbit_camera, to_rasterizer
from gsgan_core.models import build_generator
from gsgan_core.models.config import preset
from gsgan_core.models.generator import randomize_layer_scales, z_from_seeds
from gsgan_core.models.graphed import GraphedSynthesis
from gsgan_core.render import backend_report, render

from common import device_name, median_ms, set_tf32
from scenes import head_like

CASES = [("ffhq256", 256), ("ffhq512", 512), ("lite256", 256), ("lite512", 512)]
DEFAULT_PRESETS = "ffhq256,ffhq512"
BATCHES = [1, 8]
TARGET_MS = {256: 1.5, 512: 2.0}  # per image at batch 1, generator + rasterizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile modes")
    parser.add_argument("--presets", default=DEFAULT_PRESETS,
                        help="comma-separated, from " + ", ".join(name for name, _ in CASES))
    args = parser.parse_args()
    chosen = args.presets.split(",")
    unknown = sorted(set(chosen) - {name for name, _ in CASES})
    if unknown:
        parser.error(f"--presets: unknown {', '.join(unknown)}")
    if not torch.cuda.is_available():
        print("bench_core needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    torch._dynamo.config.cache_size_limit = 32  # one compiled graph per preset, batch and dtype
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"device: {device_name(device)}; torch {torch.__version__}; render: {backend_report(device)}")

    results = []
    compile_s: dict[str, float] = {}
    for name, resolution in [case for case in CASES if case[0] in chosen]:
        torch.manual_seed(0)
        config = preset(name)
        generator = randomize_layer_scales(build_generator(config)).to(device).eval().requires_grad_(False)
        for batch in BATCHES:
            z = z_from_seeds(range(batch), config.z_dim, device)
            cam2world, K = orbit_camera(yaw=torch.linspace(-0.4, 0.4, batch), pitch=0.1, device=device)
            c = cameras_to_labels(cam2world, K) if getattr(config, "c_dim", 0) else None  # pose-conditioned mapping
            viewmats, Ks = to_rasterizer(cam2world, K, resolution, resolution, camera_model=config.camera_model)
            viewmats, Ks = viewmats[:, None], Ks[:, None]  # one camera per scene: [B, 1, ...]
            with torch.no_grad():
                ws = generator.mapping(z, c, psi=0.7)
                view_dirs = cam2world[:, :3, 2]

                def gen_eager():
                    return generator.synthesize(generator.mapping(z, c, psi=0.7), view_dirs)

                def gen_bf16():
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        return gen_eager()

                modes = {}
                set_tf32(False)
                modes["eager fp32"] = median_ms(gen_eager, device, args.iters)
                set_tf32(True)
                modes["eager tf32"] = median_ms(gen_eager, device, args.iters)
                modes["eager bf16"] = median_ms(gen_bf16, device, args.iters)
                graphed = GraphedSynthesis(generator, batch)
                reference = gen_eager()
                replayed = graphed(ws, view_dirs)
                errors = {"graph tf32": float((replayed.means - reference.means).abs().max())}
                modes["graph tf32"] = median_ms(
                    lambda: graphed(generator.mapping(z, c, psi=0.7), view_dirs, clone=False), device, args.iters
                )
                for label, dtype in (("compiled tf32", torch.float32), ("compiled bf16", torch.bfloat16)):
                    if args.no_compile or batch != 1:  # compiling takes ~a minute per shape: batch 1 only
                        break
                    try:
                        compiled = torch.compile(generator.synthesize, mode="reduce-overhead", dynamic=False)

                        def gen_compiled(compiled=compiled, dtype=dtype):
                            with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                                return compiled(generator.mapping(z, c, psi=0.7), view_dirs)

                        start = time.perf_counter()
                        for _ in range(3):  # compile, then record the CUDA graph
                            out = gen_compiled()
                        torch.cuda.synchronize()
                        compile_s[f"{name} b{batch} {label}"] = time.perf_counter() - start
                        errors[label] = float((out.means.float() - reference.means).abs().max())
                        modes[label] = median_ms(gen_compiled, device, args.iters)
                    except Exception as err:  # report, do not hide: the eager numbers still stand
                        print(f"{label} failed for {name} batch {batch}: {type(err).__name__}: {err}", flush=True)
                gaussians = reference
                render_ms = median_ms(
                    lambda: render(gaussians, viewmats, Ks, resolution, resolution, backend="gsplat"),
                    device, args.iters,
                )
                render_head_ms = None
                if config.architecture == "lite":  # head_like builds the lite hierarchy
                    head = head_like(config, batch, device)
                    render_head_ms = median_ms(
                        lambda: render(head, viewmats, Ks, resolution, resolution, backend="gsplat"),
                        device, args.iters,
                    )
                best_mode = min(modes, key=modes.get)
                graphed = None  # its CUDA graph's memory pool goes before the peak is measured
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                out = render(gen_eager(), viewmats, Ks, resolution, resolution, backend="gsplat")
                torch.cuda.synchronize()
                peak_mib = (torch.cuda.max_memory_allocated(device) - base) / 2**20
                assert out.rgb.shape == (batch, 1, resolution, resolution, 3)
            row = {
                "preset": name,
                "architecture": config.architecture,
                "resolution": resolution,
                "batch": batch,
                "gaussians": gaussians.num_gaussians,
                "generator_ms": modes,
                "max_abs_diff_of_means_vs_eager": errors,
                "render_ms": render_ms,
                "render_head_like_ms": render_head_ms,
                "best_generator_mode": best_mode,
                "total_ms_per_image": (modes[best_mode] + render_ms) / batch,
                "total_head_like_ms_per_image": (
                    (modes[best_mode] + render_head_ms) / batch if render_head_ms is not None else None
                ),
                "peak_mib": peak_mib,
            }
            results.append(row)
            print(json.dumps(row), flush=True)
        generator = None  # freed before the next preset is built
        torch.cuda.empty_cache()

    (args.out / "bench_core.json").write_text(json.dumps({"device": device_name(device), "rows": results, "compile_s": compile_s}, indent=1))
    print()
    print("compile + graph capture time (s):", json.dumps({k: round(v, 1) for k, v in compile_s.items()}))
    mode_names = list(dict.fromkeys(m for r in results for m in r["generator_ms"]))
    print("| preset | res | batch | " + " | ".join(f"G {m}" for m in mode_names)
          + " | render (G's scene) | render (head-like) | best G mode | total / image | total / image (head-like) | peak MiB | target / image |")
    print("|---" * (len(mode_names) + 11) + "|")
    for r in results:
        g = r["generator_ms"]
        target = f"{TARGET_MS[r['resolution']]} ms" if r["batch"] == 1 else "-"
        head_ms = "-" if r["render_head_like_ms"] is None else f"{r['render_head_like_ms']:.2f}"
        head_total = "-" if r["total_head_like_ms_per_image"] is None else f"{r['total_head_like_ms_per_image']:.2f}"
        print(
            f"| {r['preset']} | {r['resolution']} | {r['batch']} | "
            + " | ".join(f"{g[m]:.2f}" if m in g else "-" for m in mode_names)
            + f" | {r['render_ms']:.2f} | {head_ms} | {r['best_generator_mode']} | "
            f"{r['total_ms_per_image']:.2f} | {head_total} | {r['peak_mib']:.0f} | {target} |"
        )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
