"""A procedural dataset of 3D heads that no one has to download: `gsgan-dataset heads`.

Every head is a handful of analytic ellipsoids (head, neck, hair cap, eyes with irises, brows, nose,
ears, mouth) with random shapes and colours, ray-traced by the small numpy renderer below with
Lambert + ambient + specular shading and 2x2 supersampled alpha. It is deliberately *not* rendered
with our splat rasterizer, so a GAN trained on it does not just learn its own renderer back.

World and camera conventions are EG3D's (gsgan_core/cameras.py): +y up, the face looks toward +z,
cameras at radius 2.7 looking at (0, 0, 0.2), OpenCV camera axes, labels of 25 floats. Cameras are
drawn like FFHQ's: yaw ~ N(0, 0.3), pitch ~ N(0, 0.155) radians around the frontal view; or, with
cameras="orbit", at any yaw around the head, looking at its centre (the shipped demo's choice).

Image i depends only on (seed, i), so the output is identical for any number of processes.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from gsgan_core.io.atomic import atomic_path

HEADS_RADIUS = 2.7
HEADS_PIVOT = (0.0, 0.0, 0.2)
HEADS_FOV_DEG = 18.0
HEADS_YAW_STD, HEADS_PITCH_STD = 0.3, 0.155
SUPERSAMPLE = 2  # rays per pixel along each axis
CAMERA_DISTRIBUTIONS = ("ffhq", "orbit")


@dataclass
class Ellipsoid:
    center: np.ndarray  # [3]
    radii: np.ndarray  # [3] semi-axes along x, y, z (axis-aligned)
    color: np.ndarray  # [3] albedo in [0, 1]
    specular: float = 0.0
    clip_normal: np.ndarray | None = None  # keep only surface points with (p - center) . n >= clip_offset
    clip_offset: float = 0.0


# ====================================================================== the random head
def sample_head(rng: np.random.Generator) -> list[Ellipsoid]:
    """One random head as a list of ellipsoids, centred near the world origin, facing +z."""
    E = lambda c, r, col, **kw: Ellipsoid(np.array(c, float), np.array(r, float), np.array(col, float), **kw)  # noqa: E731
    rx, ry, rz = rng.uniform(0.23, 0.28), rng.uniform(0.29, 0.35), rng.uniform(0.26, 0.31)
    skin = np.array([0.95, 0.75, 0.6]) * rng.uniform(0.35, 1.0) + rng.uniform(-0.05, 0.05, 3)
    hair = rng.uniform(0.02, 0.6) * np.array([1.0, rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.7)])
    if rng.random() < 0.15:  # the occasional dyed head
        hair = rng.uniform(0.1, 0.9, 3)
    iris = rng.choice([[0.25, 0.15, 0.05], [0.2, 0.4, 0.7], [0.3, 0.5, 0.25], [0.1, 0.08, 0.05]]) * rng.uniform(0.7, 1.2)
    lips = np.clip(skin * np.array([0.9, 0.55, 0.55]), 0, 1)

    def front(x: float, y: float) -> float:  # z of the head's front surface above (x, y)
        return rz * math.sqrt(max(1 - (x / rx) ** 2 - (y / ry) ** 2, 0.0))

    eye_y, eye_x, eye_r = rng.uniform(0.02, 0.08), rng.uniform(0.08, 0.11), rng.uniform(0.03, 0.042)
    nose_len = rng.uniform(0.045, 0.08)
    mouth_y, mouth_w = rng.uniform(-0.17, -0.12), rng.uniform(0.05, 0.085)
    hairline = rng.uniform(0.05, 0.16)
    parts = [
        E([0, 0, 0], [rx, ry, rz], skin),  # head
        E([0, -0.36, -0.05], [0.12, 0.2, 0.12], skin * 0.9),  # neck
        E(  # hair: a slightly larger shell, kept above a tilted plane so it covers top and back
            [0, 0.02, -0.02], [rx + rng.uniform(0.01, 0.05), ry + rng.uniform(0.02, 0.06), rz + rng.uniform(0.01, 0.05)],
            hair, specular=0.15, clip_normal=np.array([0.0, 1.0, -0.6]) / math.hypot(1.0, 0.6), clip_offset=hairline,
        ),
        E([0, -0.02, front(0, -0.02) - 0.01], [0.035, nose_len, rng.uniform(0.04, 0.07)], skin * 0.97),  # nose
        E([0, mouth_y, front(0, mouth_y) - 0.012], [mouth_w, 0.018, 0.03], lips),  # mouth
    ]
    for side in (-1, 1):
        x = side * eye_x
        z_eye = front(x, eye_y) - 0.6 * eye_r
        parts += [
            E([x, eye_y, z_eye], [eye_r] * 3, [0.95, 0.95, 0.92], specular=0.5),  # eyeball
            E([x, eye_y, z_eye + 0.75 * eye_r], [0.5 * eye_r, 0.5 * eye_r, 0.3 * eye_r], iris, specular=0.6),
            E([x, eye_y + 1.6 * eye_r, front(x, eye_y + 1.6 * eye_r) - 0.005], [1.4 * eye_r, 0.25 * eye_r, 0.02], hair),
            E([side * rx * 0.97, 0.0, -0.03], [0.03, rng.uniform(0.05, 0.08), 0.045], skin * 0.93),  # ear
        ]
    return parts


def head_bounding_sphere(parts: list[Ellipsoid]) -> tuple[np.ndarray, float]:
    """A sphere (centre, radius) that contains every part: rays missing it see background."""
    center = np.zeros(3)
    return center, max(float(np.linalg.norm(p.center - center) + p.radii.max()) for p in parts)


# ====================================================================== cameras (numpy, EG3D convention)
def _check_cameras(cameras: str) -> None:
    if cameras not in CAMERA_DISTRIBUTIONS:
        raise ValueError(f"cameras must be one of {CAMERA_DISTRIBUTIONS}, got {cameras!r}")


def head_camera(rng: np.random.Generator, cameras: str = "ffhq") -> tuple[np.ndarray, np.ndarray]:
    """A camera at radius 2.7 around the origin, looking at a pivot: cam2world [4, 4], K_norm [3, 3].
    cameras="ffhq": FFHQ-like yaws around the frontal view; "orbit": yaw uniform over the whole circle, so
    a generator trained on it has seen every side of the head."""
    _check_cameras(cameras)
    yaw = rng.normal() * HEADS_YAW_STD if cameras == "ffhq" else rng.uniform(-math.pi, math.pi)
    # ffhq: EG3D's pivot in front of the head centre; orbit: the centre, so side and back views frame the head
    pivot = np.array(HEADS_PIVOT) if cameras == "ffhq" else np.zeros(3)
    pitch = float(np.clip(rng.normal() * HEADS_PITCH_STD, -0.6, 0.6))
    eye = HEADS_RADIUS * np.array([math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)])
    forward = pivot - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    cam2world = np.eye(4)
    cam2world[:3, :3] = np.stack([right, down, forward], axis=1)
    cam2world[:3, 3] = eye
    focal = 0.5 / math.tan(math.radians(HEADS_FOV_DEG) / 2)
    K_norm = np.array([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1.0]])
    return cam2world, K_norm


def camera_rays(cam2world: np.ndarray, K_norm: np.ndarray, resolution: int, supersample: int = 1):
    """Ray origins [3] and unit directions [R*s, R*s, 3] through sub-pixel centres."""
    n = resolution * supersample
    uv = (np.arange(n) + 0.5) / n  # normalised image coordinates in [0, 1]
    u, v = np.meshgrid(uv, uv)  # v is the row (image y, pointing down)
    dirs_cam = np.stack([(u - K_norm[0, 2]) / K_norm[0, 0], (v - K_norm[1, 2]) / K_norm[1, 1], np.ones_like(u)], -1)
    dirs = dirs_cam @ cam2world[:3, :3].T
    return cam2world[:3, 3], dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


# ====================================================================== the ray tracer
def _intersect(part: Ellipsoid, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the first visible surface point of `part` (inf where none) and its normal."""
    o = (origin - part.center) / part.radii  # in the frame where the ellipsoid is the unit sphere
    d = dirs / part.radii
    a = (d * d).sum(-1)
    b = 2 * (d @ o)
    c = o @ o - 1
    disc = b * b - 4 * a * c
    root = np.sqrt(np.maximum(disc, 0))
    t = np.full(a.shape, np.inf)
    inside = np.zeros(a.shape, bool)  # hit the far side from within (seen through a clipped shell)
    for sign in (-1, 1):  # near root first; the far root only where the near one was clipped away
        t_root = (-b + sign * root) / (2 * a)
        hit = (disc > 0) & (t_root > 0) & np.isinf(t)
        if part.clip_normal is not None:
            p = origin + t_root[..., None] * dirs - part.center
            hit &= p @ part.clip_normal >= part.clip_offset
        t = np.where(hit, t_root, t)
        inside |= hit & (sign > 0)
    p = origin + np.where(np.isinf(t), 0, t)[..., None] * dirs
    normal = (p - part.center) / part.radii**2
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12
    normal = np.where(inside[..., None], -normal, normal)
    return t, normal


def trace_head(
    parts: list[Ellipsoid],
    cam2world: np.ndarray,  # [4, 4]
    K_norm: np.ndarray,  # [3, 3]
    resolution: int,
    light_dir: np.ndarray,  # [3] unit vector toward the light
) -> np.ndarray:  # uint8 [R, R, 4] straight (not premultiplied) RGBA
    origin, dirs = camera_rays(cam2world, K_norm, resolution, SUPERSAMPLE)
    n = dirs.shape[0]
    dirs = dirs.reshape(-1, 3)
    depth = np.full(len(dirs), np.inf)
    color = np.zeros(dirs.shape)
    for part in parts:
        # Only rays that pass through the part's bounding sphere can hit it: most parts (eyes, nose,
        # ears) cover a few percent of the image, so this makes a frame about 6x faster. The result is
        # the same as tracing every ray: the others miss.
        to_center = part.center - origin
        along = dirs @ to_center
        radius = float(part.radii.max()) * 1.001
        rays = np.flatnonzero((to_center @ to_center - along**2 <= radius**2) & (along > -radius))
        if len(rays) == 0:
            continue
        ray_dirs = dirs[rays]
        t, normal = _intersect(part, origin, ray_dirs)
        closer = t < depth[rays]
        rays, t, normal, ray_dirs = rays[closer], t[closer], normal[closer], ray_dirs[closer]
        diffuse = np.clip(normal @ light_dir, 0, None)[..., None]
        half = light_dir - ray_dirs
        half /= np.linalg.norm(half, axis=-1, keepdims=True)
        spec = part.specular * np.clip((normal * half).sum(-1), 0, None)[..., None] ** 40
        depth[rays] = t
        color[rays] = part.color * (0.3 + 0.7 * diffuse) + spec
    hit = np.isfinite(depth).astype(float).reshape(n, n, 1)
    color = color.reshape(n, n, 3)
    # 2x2 supersampling: alpha is the covered fraction, colour the mean over covered sub-pixels
    s = SUPERSAMPLE
    hit_px = hit.reshape(resolution, s, resolution, s, 1).mean((1, 3))
    color_px = (color * hit).reshape(resolution, s, resolution, s, 3).mean((1, 3)) / np.maximum(hit_px, 1e-8)
    rgba = np.concatenate([np.clip(color_px, 0, 1), hit_px], axis=-1)
    return np.round(rgba * 255).astype(np.uint8)


def render_head(
    seed: int, index: int, resolution: int, cameras: str = "ffhq"
) -> tuple[np.ndarray, np.ndarray, list[Ellipsoid]]:
    """Image `index` of the dataset with `seed`: (RGBA uint8 [R, R, 4], label [25], the head's parts)."""
    rng = np.random.default_rng([seed, index])
    parts = sample_head(rng)
    cam2world, K_norm = head_camera(rng, cameras)
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(0.2, 0.9), 1.0])
    rgba = trace_head(parts, cam2world, K_norm, resolution, light / np.linalg.norm(light))
    label = np.concatenate([cam2world.reshape(-1), K_norm.reshape(-1)])
    return rgba, label, parts


def _render_png(job: tuple[int, int, int, str]) -> tuple[bytes, list[float]]:
    import imageio.v3 as iio

    seed, index, resolution, cameras = job
    rgba, label, _ = render_head(seed, index, resolution, cameras)
    return iio.imwrite("<bytes>", rgba, extension=".png"), [float(v) for v in label]


def image_name(index: int) -> str:
    return f"img{index:08d}.png"


def make_heads_dataset(
    out: str | os.PathLike,  # a .zip path
    count: int,
    resolution: int,
    seed: int = 0,
    processes: int | None = None,  # None: every core
    progress: bool = True,
    cameras: str = "ffhq",  # ffhq | orbit (see head_camera)
) -> None:
    """Renders `count` heads into an EG3D-format zip (RGBA PNGs + dataset.json), written atomically."""
    from tqdm import tqdm

    if count < 1 or resolution < 8:
        raise ValueError(f"need count >= 1 and resolution >= 8, got {count} and {resolution}")
    _check_cameras(cameras)  # here too, so a bad value fails before the worker processes start
    out = Path(out)
    jobs = [(seed, i, resolution, cameras) for i in range(count)]
    processes = max(1, min(processes or os.cpu_count() or 1, count))
    labels = []
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        bar = tqdm(total=count, desc=f"rendering heads {resolution}x{resolution}", unit="img", disable=not progress)
        if processes == 1:
            results = map(_render_png, jobs)
            pool = None
        else:  # fork is cheap and numpy-only children are safe; imap keeps the order
            pool = get_context("fork").Pool(processes)
            results = pool.imap(_render_png, jobs, chunksize=max(1, min(16, count // (4 * processes))))
        try:
            for i, (png, label) in enumerate(results):
                archive.writestr(image_name(i), png)
                labels.append([image_name(i), label])
                bar.update()
        finally:
            if pool is not None:
                pool.terminate()
            bar.close()
        archive.writestr("dataset.json", json.dumps({"labels": labels}))
