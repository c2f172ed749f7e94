"""`gsgan-invert CKPT IMAGE --out DIR`: one image into a generator's latent space, then every view of it.

`gsgan_core.cli.invert_main` runs `invert_command` through the console wrapper, which turns the typed
errors (ImageError, LabelError, CheckpointError, OutputError, ...) into one line and exit status 1.
Everything that can be checked before the slow part is: the output folder, the image, the label.

Writes into DIR:
    inversion.safetensors   the latent (+ the tuned generator for --mode pti); load_inversion reads it
    fit.png                 the fitted view: the generator's rendering at the image's camera
    compare.png             the image (on the background) beside the fitted view
    turntable.mp4           a full turn around the head at the fitted pitch (--video to rename, .gif too)
    head.ply                the Gaussians (3DGS layout + hierarchy columns)
    camera.json             the camera of the fit as a one-entry dataset.json (--camera takes it back)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from gsgan_core.arguments import (add_background, add_device, add_fps, parse_colour, parse_device, parse_fps,
                                  parse_number, parse_resolution, parse_seed, print_import_note)
from gsgan_core.errors import ConfigError, OutputError

from .fit import MODES, InvertSettings
from .losses import PIXEL_LOSSES

CHECKPOINT_HELP = "generator checkpoint (.safetensors) or official GSGAN snapshot (.pkl)"
RESULT_NAME, FIT_NAME, COMPARE_NAME, PLY_NAME, CAMERA_NAME = (
    "inversion.safetensors", "fit.png", "compare.png", "head.ply", "camera.json")


def invert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gsgan-invert",
        description="Invert an image into a generator: find the latent (and with --mode pti a tuned generator) "
                    "that renders it, then write the fitted view, a turntable video and a PLY.",
    )
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("image", help="a square RGB or RGBA image (PNG, JPEG, ...); alpha is used as a mask")
    p.add_argument("--camera", default="auto",
                   help="the image's camera: a JSON file with its 25-value EG3D label (a list, {\"label\": [...]}, "
                        "or a dataset.json naming the image), or auto: estimate yaw and pitch (default)")
    p.add_argument("--mode", default="w+", choices=MODES,
                   help="w: one w; w+: W then one w per layer (default); pti: W, W+, then tune the generator")
    p.add_argument("--steps", type=int, default=200, help="optimisation steps of each stage (default 200)")
    p.add_argument("--search-steps", type=int, default=30,
                   help="--camera auto: steps of each candidate camera's short fit (default 30)")
    p.add_argument("--pixel-loss", default="l1", choices=PIXEL_LOSSES)
    p.add_argument("--perceptual", default=None, metavar="VGG16_WEIGHTS",
                   help="torchvision VGG16 weights (.pth or .safetensors) for a perceptual loss; never downloaded "
                        "(default: pixels only)")
    add_background(p, "what transparent pixels and renderings are put on")
    p.add_argument("--frames", type=int, default=60, help="turntable frames (default 60)")
    add_fps(p)
    p.add_argument("--video-resolution", type=int, default=None, help="turntable size (default: the fit's)")
    p.add_argument("--video", default="turntable.mp4", help="turntable file name in DIR: .mp4, .gif or .png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(p)
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    return p


def invert_command(argv: list[str] | None = None) -> int:
    from gsgan_core.io.open import load_generator
    from gsgan_core.view.video import VIDEO_SUFFIXES, check_output

    from .losses import Perceptual
    from .target import read_image, read_label, target_from_array

    args = invert_parser().parse_args(argv)
    parse_number(args.steps, "--steps", 1, integer=True)
    parse_number(args.search_steps, "--search-steps", 0, integer=True)
    parse_number(args.frames, "--frames", 1, integer=True)
    parse_fps(args.fps)
    parse_seed(args.seed)
    if args.video_resolution is not None:
        parse_resolution(args.video_resolution, "--video-resolution")
    if Path(args.video).name != args.video:
        raise ConfigError(f"--video names a file inside --out, got {args.video!r}")
    background = parse_colour(args.background)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "is a file; --out names a folder")
    if Path(args.video).suffix.lower() not in VIDEO_SUFFIXES:
        check_output(out / args.video, VIDEO_SUFFIXES)  # the type's message, before the folder is made
    pixels = read_image(args.image)  # before the slow parts: a bad image or label fails at once
    label = None if args.camera == "auto" else read_label(args.camera, image_name=args.image)
    device = parse_device(args.device)
    perceptual = Perceptual.load(args.perceptual, device) if args.perceptual else None

    G, info = load_generator(args.checkpoint, device)
    print_import_note("gsgan-invert", info)
    resolution = info.resolution
    target = target_from_array(pixels, resolution, str(args.image))
    check_output(out / RESULT_NAME, (".safetensors",))  # every input read: now create the folder, prove it writable
    video = check_output(out / args.video, VIDEO_SUFFIXES)
    settings = InvertSettings(mode=args.mode, pixel_loss=args.pixel_loss, background=background, seed=args.seed,
                              search_steps=args.search_steps, preview_every=0).with_steps(args.steps)
    result = _run(G, target, "auto" if label is None else label, settings, info, perceptual, args)

    written = [result.save(out / RESULT_NAME)]
    written += _write_views(result, G, target, resolution, background, out, video, args)
    written.append(_write_camera(result, out, Path(args.image).name))
    for path in written:
        print(f"gsgan-invert: wrote {path}")
    _summary(result, target, G, resolution, background)
    return 0


def _run(G, target, camera, settings, info, perceptual, args):
    from tqdm import tqdm

    from .fit import stage_steps
    from .inversion import invert

    total = sum(stage_steps(settings, isinstance(camera, str)).values())
    with tqdm(total=total, desc="inverting", unit="step", file=sys.stderr, disable=args.quiet) as bar:
        def progress(event) -> None:
            bar.update(1)
            if event.step == event.steps or event.step % 10 == 0:
                bar.set_postfix_str(f"{event.stage} loss {event.loss:.4f}", refresh=False)

        return invert(G, target, camera, settings, prior=info.camera, perceptual=perceptual, progress=progress,
                      resolution=target.resolution, checkpoint=str(args.checkpoint))


def _to_uint8(rgb) -> np.ndarray:  # [3, R, R] in [0, 1] -> [R, R, 3]
    return (rgb.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()


def _write_views(result, G, target, resolution, background, out: Path, video: Path, args) -> list[Path]:
    import imageio.v3 as iio
    import torch

    from gsgan_core.cameras import orbit_camera
    from gsgan_core.io.atomic import atomic_path, writing
    from gsgan_core.io.ply import write_ply
    from gsgan_core.view.video import FrameWriter

    from .fit import latent_gaussians, render_latents

    device = next(G.parameters()).device
    G = result.generator(G)
    ws = result.ws.to(device)
    cam2world, K_norm = (t.to(device) for t in result.cameras())
    written = []
    with torch.no_grad():
        rgb, _ = render_latents(G, ws, cam2world[None], K_norm[None], resolution, background)
    fit = _to_uint8(rgb[0])
    given = _to_uint8(target.composite(torch.tensor(background))[0])
    for name, image in ((FIT_NAME, fit), (COMPARE_NAME, np.concatenate([given, fit], axis=1))):
        path = out / name
        with atomic_path(path) as tmp:
            iio.imwrite(tmp, image, extension=".png")
        written.append(path)

    size = args.video_resolution or resolution
    pose = result.pose
    with FrameWriter(video, args.fps, expected_frames=args.frames) as writer:
        for start in range(0, args.frames, 8):
            count = min(8, args.frames - start)
            yaws = torch.tensor([pose.yaw + 2 * math.pi * (start + i) / args.frames for i in range(count)])
            c2w, K = orbit_camera(yaws, pose.pitch, pose.radius, pose.pivot, pose.fov_deg)
            with torch.no_grad():
                frames, _ = render_latents(G, ws.expand(count, -1, -1), c2w.to(device), K.to(device), size, background)
            for frame in frames:
                writer.append(_to_uint8(frame))
        written += writer.commit()

    ply = out / PLY_NAME
    with writing(ply):
        write_ply(ply, latent_gaussians(G, ws, cam2world).to("cpu"))
    written.append(ply)
    return written


def _write_camera(result, out: Path, image_name: str) -> Path:
    from gsgan_core.io.atomic import atomic_write_bytes

    from .target import label_json

    path = out / CAMERA_NAME
    atomic_write_bytes(path, (label_json(result.label, image_name) + "\n").encode())
    return path


def _summary(result, target, G, resolution, background) -> None:
    import torch

    from .fit import render_latents
    from .losses import psnr

    device = next(G.parameters()).device
    cam2world, K_norm = (t.to(device) for t in result.cameras())
    with torch.no_grad():
        rgb, _ = render_latents(result.generator(G), result.ws.to(device), cam2world[None], K_norm[None], resolution,
                                background)
    value = float(psnr(rgb.clamp(0, 1).cpu(), target.composite(torch.tensor(background)).cpu()))
    pose = result.pose
    camera = (f"estimated yaw {math.degrees(pose.yaw):.1f} deg, pitch {math.degrees(pose.pitch):.1f} deg"
              if result.camera_source == "auto" else "from the label")
    print(f"gsgan-invert: mode {result.mode}, camera {camera}; final loss {result.final_loss:.4f}, "
          f"fitted view PSNR {value:.2f} dB; {result.elapsed_s:.1f} s")
    for note in result.notes:
        print(f"gsgan-invert: note: {note}")
