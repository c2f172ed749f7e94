"""Inversion measured against 3D truth: procedural heads that the generator never saw, inverted from one
view and compared with their ray-traced truth at that view and at six others.

    python3 benchmarks/bench_invert.py --out out/bench_invert                 # 50 heads, the demo checkpoint
    python3 benchmarks/bench_invert.py --device cpu --heads 2 --steps 5 --pti-steps 3 --search-steps 3 \\
        --resolution 64 --out /tmp/bench_invert                                # a smoke test on the CPU

Each head is `gsgan-dataset heads`'s head of seed `--first-seed + i` (index 0; the demo was trained on seed 0
only), lit as that dataset lights it. Its input view has yaw uniform in +-40 degrees and pitch uniform in
+-10 degrees (drawn from the seed); the novel views turn the camera from there by yaw -60, -30, +30, +60 and
pitch -15, +15 degrees, on the checkpoint's orbit (its radius, pivot and field of view: the world the
generator was trained in). Truth is the dataset's own ray tracer (2x2 supersampled), RGBA, put on white.

Methods, each with the camera given (the true label) and estimated (camera "auto"):
    average   the average latent w_avg at the true cameras: the baseline
    W, W+     `fit_latents` (one batch of all heads), evaluated at the true cameras
    PTI       `tune_generator` per head from the W+ pivot (heads in order, both cameras, inside the time budget)

Reported: PSNR and SSIM on RGB at the input view (the true input camera) and averaged over the six novel views;
the gap input - novel; the estimated cameras' errors. Writes results.md, results.json, figure.png and log.txt
into --out, and prints the table last. PTI, one head at a time, takes most of the run; `--time-budget` stops
starting PTI heads once the next would end after it (the other methods always run on every head).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from common import device_name

NOVEL_VIEWS = (("yaw-60", -60.0, 0.0), ("yaw-30", -30.0, 0.0), ("yaw+30", 30.0, 0.0), ("yaw+60", 60.0, 0.0),
               ("pitch-15", 0.0, -15.0), ("pitch+15", 0.0, 15.0))
VIEW_NAMES = ("input",) + tuple(name for name, _, _ in NOVEL_VIEWS)
INPUT_YAW_DEG, INPUT_PITCH_DEG = 40.0, 10.0
METHODS = ("average", "W", "W+", "PTI")
CAMERAS = ("given", "estimated")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="assets/heads128.safetensors")
    p.add_argument("--out", default="out/bench_invert")
    p.add_argument("--heads", type=int, default=50)
    p.add_argument("--first-seed", type=int, default=10_000)
    p.add_argument("--resolution", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--steps", type=int, default=150, help="W steps and W+ steps (each)")
    p.add_argument("--pti-steps", type=int, default=80)
    p.add_argument("--search-steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=50, help="heads fitted together (W, W+)")
    p.add_argument("--cameras", default="given,estimated")
    p.add_argument("--pti", type=int, default=None, help="PTI on at most this many heads (default: all)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for the whole run: no PTI head starts that would end after them (default: no "
                        "limit, PTI on every head)")
    p.add_argument("--figure-heads", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="processes for the ray tracer (default: all cores, <= 16)")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="an InvertSettings field for every stage, e.g. --set pti_view_weight=0 (repeatable)")
    p.add_argument("--reuse-latents", default=None, metavar="FILE",
                   help="the latents.safetensors of an earlier run with the same heads: skip W and W+ (e.g. to "
                        "compare PTI settings)")
    return p.parse_args(argv)


def with_setting(settings, item: str):
    import dataclasses

    name, _, text = item.partition("=")
    fields = {f.name: f for f in dataclasses.fields(settings)}
    if name not in fields or not text:
        raise SystemExit(f"--set {item!r}: expected NAME=VALUE with NAME one of {', '.join(fields)}")
    current = getattr(settings, name)
    if isinstance(current, bool):
        value = text.lower() in ("1", "true", "yes", "on")
    elif isinstance(current, tuple):
        value = tuple(float(v) for v in text.split(","))
    else:
        value = type(current)(text)
    return dataclasses.replace(settings, **{name: value})


def save_latents(path: Path, fits: dict, seeds: list[int]) -> None:
    from safetensors.torch import save_file

    tensors = {f"{camera}.{key}": value.contiguous() for camera, fit in fits.items() for key, value in fit.items()}
    save_file(tensors, str(path), metadata={"seeds": json.dumps(seeds)})


def load_latents(path: str, seeds: list[int], cameras: list[str]) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        if json.loads(f.metadata().get("seeds", "[]")) != seeds:
            raise SystemExit(f"--reuse-latents {path}: made for other heads (seeds differ)")
        out: dict = {}
        for key in f.keys():
            camera, name = key.split(".", 1)
            if camera in cameras:
                out.setdefault(camera, {})[name] = f.get_tensor(key)
    return out


class Log:
    def __init__(self, path: Path):
        self.file = open(path, "w")
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.start:7.1f} s] {message}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


# ====================================================================== ground truth (numpy, before CUDA)
def view_angles(seed: int) -> tuple[float, float]:
    """The input view of head `seed`: (yaw, pitch) in degrees."""
    rng = np.random.default_rng([seed, 1])
    return float(rng.uniform(-INPUT_YAW_DEG, INPUT_YAW_DEG)), float(rng.uniform(-INPUT_PITCH_DEG, INPUT_PITCH_DEG))


def all_angles(seed: int) -> list[tuple[float, float]]:  # (yaw, pitch) degrees of the 7 views
    yaw, pitch = view_angles(seed)
    return [(yaw, pitch)] + [(yaw + dy, pitch + dp) for _, dy, dp in NOVEL_VIEWS]


def _truth_job(job) -> np.ndarray:  # -> uint8 [7, R, R, 4]
    import torch

    from gsgan_core.cameras import orbit_camera
    from gsgan_core.data.heads import head_camera, sample_head, trace_head

    seed, resolution, pose = job
    rng = np.random.default_rng([seed, 0])
    parts = sample_head(rng)  # the dataset's head of (seed, index 0) ...
    head_camera(rng, "orbit")  # ... and its light, drawn after its camera
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(0.2, 0.9), 1.0])
    light /= np.linalg.norm(light)
    images = []
    for yaw, pitch in all_angles(seed):
        cam2world, K = orbit_camera(math.radians(yaw), math.radians(pitch), pose["radius"], pose["pivot"],
                                    pose["fov_deg"], dtype=torch.float64)
        images.append(trace_head(parts, cam2world.numpy(), K.numpy(), resolution, light))
    return np.stack(images)


def render_truth(seeds: list[int], resolution: int, pose: dict, workers: int) -> np.ndarray:  # [N, 7, R, R, 4]
    jobs = [(s, resolution, pose) for s in seeds]
    if workers <= 1:
        return np.stack([_truth_job(j) for j in jobs])
    with get_context("fork").Pool(workers) as pool:
        return np.stack(pool.map(_truth_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def true_cameras(seeds: list[int], prior, device):  # -> cam2world [N, 7, 4, 4], K [N, 7, 3, 3], labels [N, 25]
    import torch

    from gsgan_core.cameras import cameras_to_labels, orbit_camera

    angles = torch.tensor([all_angles(s) for s in seeds], dtype=torch.float64)  # [N, 7, 2]
    cam2world, K = orbit_camera(torch.deg2rad(angles[..., 0]), torch.deg2rad(angles[..., 1]), prior.radius,
                                prior.pivot, prior.fov_deg)
    cam2world, K = cam2world.float().to(device), K.float().to(device)
    return cam2world, K, cameras_to_labels(cam2world[:, 0], K[:, 0])


# ====================================================================== rendering and scoring
def render_views(G, ws, cam2world, K, resolution, backend, chunk=64):  # ws [N, S, D], cams [N, V] -> [N, V, 3, R, R] CPU
    import torch

    from gsgan_core.invert import render_latents

    N, V = cam2world.shape[:2]
    flat_ws = ws.to(cam2world.device).repeat_interleave(V, 0)
    flat_c, flat_k = cam2world.reshape(N * V, 4, 4), K.reshape(N * V, 3, 3)
    out = []
    with torch.no_grad():
        for start in range(0, N * V, chunk):
            rgb, _ = render_latents(G, flat_ws[start:start + chunk], flat_c[start:start + chunk],
                                    flat_k[start:start + chunk], resolution, (1.0, 1.0, 1.0), backend)
            out.append(rgb.clamp(0, 1).cpu())
    return torch.cat(out).reshape(N, V, 3, resolution, resolution)


def score(images, truth):  # [N, V, 3, R, R] twice -> psnr, ssim [N, V] numpy
    from gsgan_core.invert import psnr, ssim

    N, V = images.shape[:2]
    a, b = images.flatten(0, 1), truth.flatten(0, 1)
    return psnr(a, b).reshape(N, V).numpy(), ssim(a, b).reshape(N, V).numpy()


def summarise(psnr_nv: np.ndarray, ssim_nv: np.ndarray) -> dict:
    novel_p, novel_s = psnr_nv[:, 1:].mean(1), ssim_nv[:, 1:].mean(1)
    return {
        "heads": int(len(psnr_nv)),
        "input_psnr": float(psnr_nv[:, 0].mean()), "input_ssim": float(ssim_nv[:, 0].mean()),
        "novel_psnr": float(novel_p.mean()), "novel_ssim": float(novel_s.mean()),
        "gap_db": float((psnr_nv[:, 0] - novel_p).mean()),
        "per_view_psnr": {name: float(psnr_nv[:, v].mean()) for v, name in enumerate(VIEW_NAMES)},
        "per_view_ssim": {name: float(ssim_nv[:, v].mean()) for v, name in enumerate(VIEW_NAMES)},
        "per_head_psnr": psnr_nv.round(3).tolist(), "per_head_ssim": ssim_nv.round(4).tolist(),
    }


# ====================================================================== outputs
def figure(path: Path, truth, rows: dict, heads: list[int], resolution: int) -> None:
    """Per head: a truth row, then one row per method: input | fitted input view | the six novel views."""
    import imageio.v3 as iio

    R = resolution
    label_w = 96
    cols = 2 + len(NOVEL_VIEWS)
    names = ["truth"] + list(rows)
    canvas = np.full((len(heads) * len(names) * R + 24, label_w + cols * R, 3), 255, np.uint8)
    texts = []
    for h_i, h in enumerate(heads):
        for r_i, name in enumerate(names):
            y = 24 + (h_i * len(names) + r_i) * R
            input_image = truth[h, 0]
            views = truth[h] if name == "truth" else rows[name][h]
            tiles = [input_image, views[0]] + [views[v] for v in range(1, 1 + len(NOVEL_VIEWS))]
            for c, tile in enumerate(tiles):
                canvas[y:y + R, label_w + c * R:label_w + (c + 1) * R] = tile
            texts.append((4, y + R // 2 - 6, f"head {h}\n{name}" if r_i == 0 else name))
    headers = ["input", "fit (input view)"] + [n for n, _, _ in NOVEL_VIEWS]
    for c, text in enumerate(headers):
        texts.append((label_w + c * R + 4, 6, text))
    try:
        from PIL import Image, ImageDraw

        image = Image.fromarray(canvas)
        draw = ImageDraw.Draw(image)
        for x, y, text in texts:
            draw.text((x, y), text, fill=(0, 0, 0))
        canvas = np.asarray(image)
    except ImportError:  # labels are a nicety; the layout is in results.md
        pass
    iio.imwrite(path, canvas, extension=".png")


def markdown(results: dict, args, timings: dict, meta: dict) -> str:
    lines = [f"# Inversion against 3D truth ({meta['heads']} held-out procedural heads, {meta['resolution']} px)", "",
             f"Checkpoint `{args.checkpoint}`, device {meta['device']}, heads of seeds {args.first_seed}.."
             f"{args.first_seed + meta['heads'] - 1}. W {args.steps} steps, W+ {args.steps}, PTI {args.pti_steps}, "
             f"camera search {args.search_steps}. PSNR (dB) and SSIM on RGB over white; novel = mean of "
             f"{', '.join(n for n, _, _ in NOVEL_VIEWS)}; gap = input - novel PSNR.", "",
             "| method | camera | heads | input PSNR | input SSIM | novel PSNR | novel SSIM | gap (dB) | camera error (median yaw / pitch, deg) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        for camera in CAMERAS:
            r = results.get(method, {}).get(camera)
            if r is None:
                continue
            err = r.get("camera_error_deg")
            err_text = f"{err['median_yaw']:.1f} / {err['median_pitch']:.1f}" if err else "-"
            lines.append(f"| {method} | {camera} | {r['heads']} | {r['input_psnr']:.2f} | {r['input_ssim']:.3f} | "
                         f"{r['novel_psnr']:.2f} | {r['novel_ssim']:.3f} | {r['gap_db']:.2f} | {err_text} |")
    lines += ["", "Novel-view PSNR by view:", "",
              "| method | camera | " + " | ".join(VIEW_NAMES) + " |", "|---|---|" + "---|" * len(VIEW_NAMES)]
    for method in METHODS:
        for camera in CAMERAS:
            r = results.get(method, {}).get(camera)
            if r is not None:
                lines.append(f"| {method} | {camera} | " + " | ".join(f"{r['per_view_psnr'][v]:.2f}" for v in VIEW_NAMES) + " |")
    lines += ["", "Goals:", ""]
    for camera in CAMERAS:
        base, wplus, pti = (results.get(m, {}).get(camera) for m in ("average", "W+", "PTI"))
        if base and wplus:
            gain = wplus["novel_psnr"] - base["novel_psnr"]
            lines.append(f"- camera {camera}: W+ novel-view PSNR - average latent's = {gain:+.2f} dB "
                         f"(goal >= 4: {'met' if gain >= 4 else 'missed'})")
        if pti:
            lines.append(f"- camera {camera}: PTI input - novel PSNR gap = {pti['gap_db']:.2f} dB on {pti['heads']} heads "
                         f"(goal < 6: {'met' if pti['gap_db'] < 6 else 'missed'})")
    lines += ["", "Timing (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()), "",
              "figure.png: per head, a truth row then one row per method; columns: input | fitted input view | "
              + " | ".join(n for n, _, _ in NOVEL_VIEWS) + ".", ""]
    return "\n".join(lines)


# ====================================================================== main
def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "log.txt")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    cameras_wanted = [c.strip() for c in args.cameras.split(",") if c.strip()]
    if not set(cameras_wanted) <= set(CAMERAS):
        raise SystemExit(f"--cameras: choose from {', '.join(CAMERAS)}")

    # Checkpoint facts first (no weights, no CUDA), then the truth: forked workers before CUDA exists.
    from gsgan_core.io.checkpoint import read_checkpoint_info

    info = read_checkpoint_info(args.checkpoint)
    prior = info.camera
    R = int(args.resolution or info.resolution)
    seeds = [args.first_seed + i for i in range(args.heads)]
    workers = args.workers or min(os.cpu_count() or 1, 16)
    truth_uint8 = render_truth(seeds, R, prior.to_dict(), workers)  # [N, 7, R, R, 4]
    timings["truth"] = time.perf_counter() - clock
    log(f"truth: {len(seeds)} heads x {len(VIEW_NAMES)} views at {R} px in {timings['truth']:.1f} s ({workers} processes)")

    import torch

    from gsgan_core.arguments import parse_device
    from gsgan_core.invert import (InvertSettings, Target, average_latent, fit_latents, target_from_array,
                                   tune_generator, w_statistics)
    from gsgan_core.io.open import load_generator
    from gsgan_core.render import backend_report

    device = parse_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    G, info = load_generator(args.checkpoint, device)
    truth = torch.from_numpy(truth_uint8).float() / 255  # [N, 7, R, R, 4]
    truth_rgb = (truth[..., :3] * truth[..., 3:] + (1 - truth[..., 3:])).permute(0, 1, 4, 2, 3).contiguous()  # on white
    cam2world, K, labels = true_cameras(seeds, prior, device)
    targets = Target.stack([target_from_array(truth_uint8[i, 0], R, f"seed {s}") for i, s in enumerate(seeds)])
    w_stats = w_statistics(G, prior)
    base = render_views(G, average_latent(G).expand(len(seeds), -1, -1), cam2world, K, R, args.backend)  # compiles gsplat
    timings["setup"] = time.perf_counter() - t0
    backend = backend_report(device, needs_grad=True)
    log(f"setup (load, W statistics, first renders incl. any JIT compile): {timings['setup']:.1f} s; renderer {backend}")

    results: dict[str, dict[str, dict]] = {m: {} for m in METHODS}
    views: dict[str, np.ndarray] = {}  # row name of the figure -> uint8 [N, 7, R, R, 3]
    to_uint8 = lambda x: (x.permute(0, 1, 3, 4, 2) * 255 + 0.5).byte().numpy()  # noqa: E731
    p, s = score(base, truth_rgb)
    for camera in cameras_wanted:  # the baseline does not depend on the camera mode; listed with each
        results["average"][camera] = summarise(p, s)
    views["average"] = to_uint8(base)

    settings = InvertSettings(mode="w+", w_steps=args.steps, wplus_steps=args.steps, pti_steps=args.pti_steps,
                              search_steps=args.search_steps, preview_every=0, backend=args.backend)
    for item in args.set:  # e.g. --set pti_view_weight=0 --set lr_pti=1e-3
        settings = with_setting(settings, item)
    reused = load_latents(args.reuse_latents, seeds, cameras_wanted) if args.reuse_latents else {}
    fits = {}
    for camera in cameras_wanted:
        t0 = time.perf_counter()
        ws_w, ws_plus, fitted_labels, yaw, pitch = [], [], [], [], []
        if camera in reused:
            ws_w, ws_plus, fitted_labels = [reused[camera]["w"]], [reused[camera]["ws"]], [reused[camera]["labels"]]
            if "yaw" in reused[camera]:
                yaw, pitch = [reused[camera]["yaw"]], [reused[camera]["pitch"]]
            log(f"{camera} camera: W and W+ latents from {args.reuse_latents}")
        for start in range(0, len(seeds) if camera not in reused else 0, args.batch):
            part = slice(start, min(start + args.batch, len(seeds)))

            def progress(e, camera=camera, start=start):
                if e.step == e.steps or e.step % args.log_every == 0:
                    log(f"[{camera}, heads {start}+] {e.stage} {e.step}/{e.steps}: loss {e.loss:.4f}")

            fit = fit_latents(G, targets.select(list(range(part.start, part.stop))),
                              labels[part] if camera == "given" else None, settings, prior=prior,
                              progress=progress, w_stats=w_stats)
            ws_w.append(fit.w[:, None].expand(-1, G.config.num_ws, -1))
            ws_plus.append(fit.ws)
            fitted_labels.append(fit.labels)
            if fit.yaw_deg is not None:
                yaw.append(fit.yaw_deg)
                pitch.append(fit.pitch_deg)
        fits[camera] = dict(w=torch.cat(ws_w), ws=torch.cat(ws_plus), labels=torch.cat(fitted_labels))
        if yaw:
            fits[camera].update(yaw=torch.cat(yaw), pitch=torch.cat(pitch))
        timings[f"fit {camera}"] = time.perf_counter() - t0
        error = None
        if yaw:
            angles = np.array([view_angles(s_) for s_ in seeds])
            yaw_err = np.abs((torch.cat(yaw).numpy() - angles[:, 0] + 180) % 360 - 180)
            pitch_err = np.abs(torch.cat(pitch).numpy() - angles[:, 1])
            error = {"median_yaw": float(np.median(yaw_err)), "median_pitch": float(np.median(pitch_err)),
                     "mean_yaw": float(yaw_err.mean()), "within_15deg": float((yaw_err <= 15).mean()),
                     "per_head_yaw": yaw_err.round(2).tolist(), "per_head_pitch": pitch_err.round(2).tolist()}
        for method, key in (("W", "w"), ("W+", "ws")):
            images = render_views(G, fits[camera][key], cam2world, K, R, args.backend)
            p, s = score(images, truth_rgb)
            results[method][camera] = summarise(p, s)
            results[method][camera]["camera_error_deg"] = error
            if camera == "estimated":  # what the user sees: the fit at its own (estimated) camera
                from gsgan_core.cameras import labels_to_cameras

                c_fit, k_fit = labels_to_cameras(fits[camera]["labels"].to(device))
                own = render_views(G, fits[camera][key], c_fit[:, None], k_fit[:, None], R, args.backend)
                results[method][camera]["input_psnr_at_fitted_camera"] = float(score(own, truth_rgb[:, :1])[0].mean())
                images[:, 0] = own[:, 0]  # the figure shows the fit at its camera
            views[f"{method} ({camera})"] = to_uint8(images)
        log(f"{camera} camera: W and W+ of {len(seeds)} heads in {timings[f'fit {camera}']:.1f} s; "
            f"W+ input {results['W+'][camera]['input_psnr']:.2f} dB, novel {results['W+'][camera]['novel_psnr']:.2f} dB"
            + (f"; median yaw error {error['median_yaw']:.1f} deg" if error else ""))

    save_latents(out / "latents.safetensors", fits, seeds)

    # PTI: one generator per head, heads in order, every camera mode per head, inside --time-budget if given.
    t0 = time.perf_counter()
    limit = len(seeds) if args.pti is None else min(args.pti, len(seeds))
    pti_scores = {c: ([], []) for c in cameras_wanted}
    pti_images = {c: [] for c in cameras_wanted}
    per_head = None
    for i in range(limit if args.pti_steps > 0 else 0):
        elapsed = time.perf_counter() - clock
        # 15 s kept for what follows PTI: the figure and the result files
        if args.time_budget is not None and per_head is not None and elapsed + per_head + 15 > args.time_budget:
            log(f"PTI: stopping after {i} heads: the next would end at {elapsed + per_head:.0f} s "
                f"(--time-budget {args.time_budget:.0f} s)")
            break
        h0 = time.perf_counter()
        for camera in cameras_wanted:
            tuned, history, _ = tune_generator(G, targets.select(i), fits[camera]["ws"][i:i + 1],
                                               fits[camera]["labels"][i], settings, prior=prior)
            images = render_views(tuned, fits[camera]["ws"][i:i + 1], cam2world[i:i + 1], K[i:i + 1], R, args.backend)
            p, s = score(images, truth_rgb[i:i + 1])
            pti_scores[camera][0].append(p[0])
            pti_scores[camera][1].append(s[0])
            if i < args.figure_heads:
                if camera == "estimated":
                    from gsgan_core.cameras import labels_to_cameras

                    c_fit, k_fit = labels_to_cameras(fits[camera]["labels"][i:i + 1].to(device))
                    images[:, 0] = render_views(tuned, fits[camera]["ws"][i:i + 1], c_fit[:, None], k_fit[:, None], R,
                                                args.backend)[:, 0]
                pti_images[camera].append(to_uint8(images)[0])
            del tuned
        per_head = time.perf_counter() - h0
        if i == 0 or (i + 1) % 10 == 0:
            log(f"PTI head {i + 1}/{limit}: {per_head:.1f} s per head (all camera modes)")
    timings["pti"] = time.perf_counter() - t0
    for camera in cameras_wanted:
        if pti_scores[camera][0]:
            results["PTI"][camera] = summarise(np.stack(pti_scores[camera][0]), np.stack(pti_scores[camera][1]))
            results["PTI"][camera]["camera_error_deg"] = results["W+"][camera]["camera_error_deg"]
            if pti_images[camera]:
                fill = np.full_like(views["average"], 255)  # heads PTI did not reach: blank
                fill[:len(pti_images[camera])] = np.stack(pti_images[camera])
                views[f"PTI ({camera})"] = fill

    t0 = time.perf_counter()
    fig_heads = list(range(min(args.figure_heads, len(seeds))))
    if fig_heads:
        truth_u8 = to_uint8(truth_rgb)
        figure(out / "figure.png", truth_u8, views, fig_heads, R)
    timings["figure"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - clock
    meta = {"heads": len(seeds), "resolution": R, "device": device_name(device), "renderer": backend,
            "torch": torch.__version__, "seeds": [seeds[0], seeds[-1]],
            "input_view": f"yaw U(+-{INPUT_YAW_DEG}), pitch U(+-{INPUT_PITCH_DEG}) degrees",
            "novel_views": {n: [dy, dp] for n, dy, dp in NOVEL_VIEWS}, "settings": settings.to_dict(),
            "args": vars(args), "timings_s": timings}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    table = markdown(results, args, timings, meta)
    (out / "results.md").write_text(table)
    log(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'figure.png'}; total {timings['total']:.1f} s")
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
