"""The optimisation: camera search, W, W+ and pivotal tuning, for a batch of images at once.

    search  (camera "auto" only) every yaw/pitch of a coarse grid is scored with the average head,
            the best few (apart in yaw) each get a short W fit with the camera free; the best fit wins
    w       one w for every row of ws (the StyleGAN2 projector's recipe: Adam with a learning-rate
            ramp, decaying noise on w), with the camera refined jointly when it was estimated
    w+      every row of ws free, starting from the W solution, with a small pull back toward it
    pti     the generator's synthesis weights tuned on the image with ws fixed (Roich et al. 2022),
            on a copy: the generator handed in is never modified. A view term keeps the head's shape
            seen from a few other yaws (coverage and depth) as it was before tuning, and the
            view-dependent colour term stays frozen, so colour corrections are the head's own and
            carry to every view: the head stays a head in 3D rather than a picture painted over
            the input view.

Latents are optimised in units of W's spread: w = w_avg + scale * u, with `scale` the standard
deviation of mapped samples per coordinate, so learning rates mean the same for every checkpoint.
Items of a batch are independent (the loss is their sum and Adam works per coordinate), which lets
the benchmark fit 50 heads in one go; PTI tunes one generator per image.

Progress and cancellation, for a GUI that runs this in a background thread: `progress` gets an
`InversionProgress` after every step (a preview image every `preview_every` steps), and `cancel`
(a threading.Event or a function returning True) is checked before every step; when set,
InversionCancelled is raised and nothing is returned.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from gsgan_core.cameras import OrbitPose, camera_forward, cameras_to_labels, fov_from_intrinsics, labels_to_cameras, \
    orbit_camera, to_rasterizer
from gsgan_core.errors import ConfigError
from gsgan_core.gaussians import Gaussians
from gsgan_core.models.hierarchy import w_avg_of
from gsgan_core.render import render

from .losses import PIXEL_LOSSES, Perceptual, image_loss
from .target import Target

MODES = ("w", "w+", "pti")
Cancel = threading.Event | Callable[[], bool] | None


# ====================================================================== settings and reports
@dataclass
class InvertSettings:
    """Everything an inversion can be told. Angles in degrees; learning rates per Adam step."""

    mode: str = "w+"  # "w", "w+" (W then W+) or "pti" (W, W+, then pivotal tuning)
    w_steps: int = 200
    wplus_steps: int = 200
    pti_steps: int = 200
    lr_w: float = 0.1  # in units of W's per-coordinate standard deviation
    lr_wplus: float = 0.03
    lr_camera_deg: float = 0.6  # yaw/pitch refinement (camera "auto")
    lr_pti: float = 3e-4
    noise: float = 0.05  # StyleGAN2 projector's initial noise on w (x its total std), gone at 75 % of the steps
    pixel_loss: str = "l1"  # "l1" or "l2"
    alpha_weight: float = 1.0  # |alpha - target alpha|, for RGBA images on generators without background
    perceptual_weight: float = 1.0  # used only when a Perceptual network is given
    wplus_reg: float = 0.02  # mean squared W+ offset from the W solution (in standard deviations)
    pti_view_weight: float = 1.0  # keep the head's shape from other views (coverage, depth) as it was
    pti_view_colour: bool = False  # ... and its colours there too (stiffer: corrections transfer less)
    pti_view_yaws_deg: tuple[float, ...] = (-90.0, -45.0, 45.0, 90.0)  # those views, relative to the input
    pti_freeze_view_colour: bool = True  # the view-dependent colour term stays as trained
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # what RGBA images and renderings are put on
    refine_camera: bool = True  # camera "auto": optimise yaw and pitch with w
    search_yaws: int = 24  # grid over search_yaw_range_deg (a full turn: 15 degree steps)
    search_yaw_range_deg: tuple[float, float] = (-180.0, 180.0)
    search_pitches_deg: tuple[float, ...] = (-12.0, 0.0, 12.0)
    search_latents: int = 6  # heads besides the average one that score the grid (psi 0.7 samples)
    search_keep: int = 4  # grid cameras that get a short fit
    search_steps: int = 30
    search_batch: int = 128  # short fits run together (images x kept cameras), at most
    search_resolution: int = 64
    w_samples: int = 2000  # mapped samples for W's mean and spread
    preview_every: int = 10  # steps between preview images in the progress reports (0: none)
    seed: int = 0
    backend: str = "auto"  # render backend (gsgan_core.render)

    def with_steps(self, steps: int) -> "InvertSettings":
        """The same settings with `steps` for each of the W, W+ and PTI stages."""
        return replace(self, w_steps=steps, wplus_steps=steps, pti_steps=steps)

    def check(self) -> "InvertSettings":
        if self.mode not in MODES:
            raise ConfigError(f"inversion mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ConfigError(f"pixel loss must be one of {', '.join(PIXEL_LOSSES)}, got {self.pixel_loss!r}")
        for name in ("w_steps", "wplus_steps", "pti_steps", "search_steps"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.w_steps < 1:
            raise ConfigError(f"the W stage needs at least one step, got w_steps={self.w_steps}")
        if self.search_yaws < 1 or not self.search_pitches_deg or self.search_keep < 1 or self.search_batch < 1:
            raise ConfigError("the camera search needs at least one yaw, one pitch, one kept candidate and a batch")
        if self.search_latents < 0:
            raise ConfigError(f"search_latents must be >= 0, got {self.search_latents}")
        if self.search_resolution < 8:
            raise ConfigError(f"search_resolution must be at least 8, got {self.search_resolution}")
        if len(self.background) != 3 or not all(0 <= float(v) <= 1 for v in self.background):
            raise ConfigError(f"background must be three numbers in [0, 1], got {self.background!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InvertSettings":
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)


@dataclass
class InversionProgress:
    """One report: where the fit is, how good it is, and (every few steps) what it looks like."""

    stage: str  # "search", "w", "w+" or "pti"
    step: int  # 1-based, within the stage
    steps: int  # of this stage
    loss: float  # mean image loss over the batch at this step
    fraction: float  # of the whole inversion's steps, 0..1
    elapsed_s: float
    yaw_deg: float | None = None  # the first image's camera while it is being estimated
    pitch_deg: float | None = None
    preview: np.ndarray | None = None  # [R, R, 3] uint8: the first image's current fit


class InversionCancelled(Exception):
    """The inversion was cancelled (its `cancel` was set); nothing was returned."""

    def __init__(self, stage: str, step: int):
        super().__init__(f"inversion cancelled in stage {stage} at step {step}")
        self.stage, self.step = stage, step


@dataclass
class LatentFit:
    """What `fit_latents` found, per image of the batch (on the CPU)."""

    w: Tensor  # [B, w_dim] the W solution
    ws: Tensor  # [B, num_ws, w_dim] the W+ solution (the W solution on every row for mode "w")
    labels: Tensor  # [B, 25] the cameras of the fit (given, or estimated)
    yaw_deg: Tensor | None  # [B] estimated cameras (camera "auto"), else None
    pitch_deg: Tensor | None
    losses: dict[str, list[float]] = field(default_factory=dict)  # stage -> batch-mean loss per step
    final: dict[str, Tensor] = field(default_factory=dict)  # stage -> [B] loss at its last step


# ====================================================================== the generator's side
def mapping_parameter_names(G: nn.Module) -> set[str]:
    """Names of the mapping network's parameters (left alone by PTI: ws are fixed there)."""
    prefixes = ("mapping_network.", "mapping.")
    return {name for name, _ in G.named_parameters() if name.startswith(prefixes)}


def view_colour_parameter_names(G: nn.Module) -> set[str]:
    """Names of the parameters through which the camera direction reaches the colours (lite: the view
    embedding and each render head's view term; official: the view encoder and its affine layer; the
    official colour layers' view columns share a weight with the rest and stay trainable)."""
    keys = ("view_embed", "color_view", "encoder_camera_cond", "camera_dep_affine")
    return {name for name, _ in G.named_parameters() if any(key in name for key in keys)}


def has_background(G: nn.Module) -> bool:
    """Whether the generator draws background Gaussians (official GSGAN always does)."""
    return bool(getattr(G.config, "background", True))


def conditioning_labels(G: nn.Module, prior: OrbitPose, n: int, device) -> Tensor | None:
    if not G.config.c_dim:
        return None
    cam2world, K_norm = prior.cameras(device=device, dtype=torch.float32)
    return cameras_to_labels(cam2world, K_norm)[None].expand(n, -1)


@torch.no_grad()
def w_statistics(G: nn.Module, prior: OrbitPose, samples: int = 2000, seed: int = 0) -> tuple[Tensor, float]:
    """(w_avg [w_dim], the per-coordinate standard deviation of mapped w). An untracked w_avg (all zeros:
    a generator that never trained) is replaced by the mean of the samples."""
    device = w_avg_of(G).device
    z = torch.randn(max(samples, 2), G.config.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    w = G.mapping(z, conditioning_labels(G, prior, len(z), device))[:, 0].float()
    w_avg = w_avg_of(G).float()
    if not bool(w_avg.abs().max() > 0):
        w_avg = w.mean(0)
    scale = float((w - w_avg).square().mean().sqrt())
    return w_avg.clone(), max(scale, 1e-6)


def render_latents(
    G: nn.Module,
    ws: Tensor,  # [B, num_ws, w_dim]
    cam2world: Tensor,  # [B, 4, 4]
    K_norm: Tensor,  # [B, 3, 3]
    resolution: int,
    background: Tensor | tuple = (1.0, 1.0, 1.0),  # [3] or [B, 3]
    backend: str = "auto",
    depth: bool = False,  # also return the expected depth [B, 1, R, R] (0 where nothing is drawn)
) -> tuple[Tensor, ...]:  # rgb [B, 3, R, R], alpha [B, 1, R, R] (, depth)
    """The generator's heads for `ws`, each seen from its camera (view-dependent colour included)."""
    B = ws.shape[0]
    cam2world, K_norm = cam2world.to(ws), K_norm.to(ws)
    view_dirs = camera_forward(cam2world) if G.config.view_dependent_color else None
    gaussians = G.synthesize(ws, view_dirs)
    viewmats, Ks = to_rasterizer(cam2world, K_norm, resolution, resolution, camera_model=G.config.camera_model)
    bg = torch.as_tensor(background, dtype=ws.dtype, device=ws.device).reshape(-1, 1, 3).expand(B, 1, 3)
    out = render(gaussians, viewmats[:, None], Ks[:, None], resolution, resolution, background=bg, backend=backend)
    planes = (out.rgb, out.alpha, out.depth) if depth else (out.rgb, out.alpha)
    return tuple(x[:, 0].permute(0, 3, 1, 2) for x in planes)


def latent_gaussians(G: nn.Module, ws: Tensor, cam2world: Tensor | None = None) -> Gaussians:
    """The Gaussians of ws [1, num_ws, w_dim] as one scene, coloured for the view of `cam2world` [4, 4]
    (the frontal view when None): what a PLY export holds."""
    view_dirs = None
    if cam2world is not None and G.config.view_dependent_color:
        view_dirs = camera_forward(cam2world.to(ws))[None]
    with torch.no_grad():
        return G.synthesize(ws, view_dirs).scene(0)


def pose_from_label(label: Tensor, prior: OrbitPose) -> OrbitPose:
    """The orbit pose nearest a label: its eye's yaw, pitch and distance from the origin, its field of
    view, and the prior's pivot (what a turntable around the fitted view needs)."""
    cam2world, K_norm = labels_to_cameras(label.detach().cpu().double().reshape(25))
    eye = cam2world[:3, 3]
    radius = float(eye.norm())
    yaw = math.atan2(float(eye[0]), float(eye[2]))
    pitch = math.asin(max(-1.0, min(1.0, float(eye[1]) / max(radius, 1e-9))))
    return OrbitPose(yaw=yaw, pitch=pitch, radius=max(radius, 1e-6), pivot=prior.pivot,
                     fov_deg=float(fov_from_intrinsics(K_norm)))


def rotate_cameras(cam2world: Tensor, yaw_rad: float, pivot) -> Tensor:  # [..., 4, 4]
    """The cameras turned by `yaw_rad` about the vertical axis through `pivot` (a yaw step of an orbit)."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    M = torch.eye(4, dtype=cam2world.dtype, device=cam2world.device)
    M[:3, :3] = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=cam2world.dtype)
    p = torch.as_tensor(pivot, dtype=cam2world.dtype, device=cam2world.device)
    M[:3, 3] = p - M[:3, :3] @ p
    return M @ cam2world


# ====================================================================== one run's bookkeeping
class _Session:
    def __init__(self, settings: InvertSettings, total_steps: int, progress, cancel: Cancel, start: float | None = None):
        self.settings, self.total, self.progress, self.cancel = settings, max(total_steps, 1), progress, cancel
        self.done = 0
        self.start = time.perf_counter() if start is None else start

    def check_cancel(self, stage: str, step: int) -> None:
        cancel = self.cancel
        if cancel is not None and (cancel.is_set() if isinstance(cancel, threading.Event) else cancel()):
            raise InversionCancelled(stage, step)

    def report(self, stage: str, step: int, steps: int, loss: Tensor, rgb: Tensor | None,
               yaw: Tensor | None = None, pitch: Tensor | None = None) -> None:
        self.done += 1
        if self.progress is None:
            return
        every = self.settings.preview_every
        preview = None
        if rgb is not None and every > 0 and (step % every == 0 or step == steps or step == 1):
            preview = (rgb[0].detach().permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        self.progress(InversionProgress(
            stage=stage, step=step, steps=steps, loss=float(loss.detach().mean()),
            fraction=min(self.done / self.total, 1.0), elapsed_s=time.perf_counter() - self.start,
            yaw_deg=None if yaw is None else math.degrees(float(yaw[0].detach())),
            pitch_deg=None if pitch is None else math.degrees(float(pitch[0].detach())),
            preview=preview,
        ))


def stage_steps(settings: InvertSettings, auto_camera: bool, images: int = 1) -> dict[str, int]:
    """How many steps (progress reports) each stage of an inversion of `images` images takes."""
    groups = math.ceil(images / max(1, settings.search_batch // max(1, settings.search_keep)))
    out = {"search": settings.search_steps * groups if auto_camera else 0, "w": settings.w_steps}
    out["w+"] = settings.wplus_steps if settings.mode in ("w+", "pti") else 0
    out["pti"] = settings.pti_steps if settings.mode == "pti" else 0
    return out


def _lr_ramp(t: float) -> float:
    """StyleGAN2 projector's schedule: a 5 % warm-up, flat, then a cosine ramp-down over the last 25 %."""
    ramp = min(1.0, (1.0 - t) / 0.25)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / 0.05)


def _step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """One step on the optimiser's own tensors. autograd.grad, not backward: the generator's parameters
    get no .grad even when they require one, so G stays untouched (and can be shared with a viewer)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
        p.grad = torch.zeros_like(p) if g is None else g  # None: a renderer without camera gradients
    optimizer.step()


def _resize(x: Tensor | None, size: int) -> Tensor | None:
    if x is None or x.shape[-1] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area")


@dataclass
class _Problem:
    """What every latent stage needs: the generator, the targets (on the background) and loss settings."""

    G: nn.Module
    target: Target  # on the device
    settings: InvertSettings
    prior: OrbitPose
    w_avg: Tensor  # [w_dim]
    scale: float
    perceptual: Perceptual | None
    fit_alpha: bool

    @property
    def background(self) -> Tensor:
        return torch.tensor(self.settings.background, dtype=torch.float32, device=self.target.rgb.device)

    def targets_at(self, resolution: int, repeat: int = 1) -> tuple[Tensor, Tensor | None]:
        rgb = _resize(self.target.composite(self.background), resolution)
        alpha = _resize(self.target.alpha, resolution)
        if repeat > 1:
            rgb = rgb.repeat_interleave(repeat, 0)
            alpha = None if alpha is None else alpha.repeat_interleave(repeat, 0)
        return rgb, alpha

    def loss(self, rgb: Tensor, alpha: Tensor, target_rgb: Tensor, target_alpha: Tensor | None) -> Tensor:  # [B]
        s = self.settings
        return image_loss(rgb, alpha, target_rgb, target_alpha, s.pixel_loss, s.alpha_weight, self.perceptual,
                          s.perceptual_weight, self.fit_alpha)

    def orbit(self, yaw: Tensor, pitch: Tensor) -> tuple[Tensor, Tensor]:  # radians [B] -> [B, 4, 4], [B, 3, 3]
        p = self.prior
        return orbit_camera(yaw, pitch, p.radius, p.pivot, p.fov_deg)


# ====================================================================== stages
def _fit_w(
    problem: _Problem, session: _Session, stage: str, steps: int, resolution: int,
    u: Tensor,  # [B, w_dim] start
    labels: Tensor | None,  # [B, 25] fixed cameras, or None: orbit cameras from yaw/pitch
    yaw: Tensor | None, pitch: Tensor | None,  # [B] radians
    learn_camera: bool, lr_camera_scale: float = 1.0, repeat: int = 1, noise_scale: float = 1.0,
) -> tuple[Tensor, Tensor | None, Tensor | None, list[float], Tensor]:
    """Adam on u (and the camera), StyleGAN2-projector style. Returns u, yaw, pitch, history, last loss [B]."""
    s, G = problem.settings, problem.G
    num_ws = G.config.num_ws
    u = u.detach().clone().requires_grad_(True)
    groups = [{"params": [u], "base_lr": s.lr_w}]
    if learn_camera:
        yaw = yaw.detach().clone().requires_grad_(True)
        pitch = pitch.detach().clone().requires_grad_(True)
        groups.append({"params": [yaw, pitch], "base_lr": math.radians(s.lr_camera_deg) * lr_camera_scale})
    optimizer = torch.optim.Adam([{"params": g["params"], "lr": 0.0} for g in groups], betas=(0.9, 0.999))
    target_rgb, target_alpha = problem.targets_at(resolution, repeat)
    if labels is not None:
        cam2world_fixed, K_fixed = labels_to_cameras(labels.to(u))
    generator = torch.Generator(device=u.device).manual_seed(s.seed + 1)
    noise_total = s.noise * math.sqrt(u.shape[-1]) * noise_scale  # StyleGAN2: noise x the total std of w
    history: list[float] = []
    last = torch.zeros(u.shape[0], device=u.device)
    for step in range(1, steps + 1):
        session.check_cancel(stage, step)
        t = (step - 0.5) / steps
        for group, settings in zip(optimizer.param_groups, groups):
            group["lr"] = settings["base_lr"] * _lr_ramp(t)
        noise_strength = noise_total * max(0.0, 1.0 - t / 0.75) ** 2
        u_in = u + noise_strength * torch.randn(u.shape, generator=generator, device=u.device) if noise_strength else u
        w = problem.w_avg + problem.scale * u_in
        ws = w[:, None].expand(-1, num_ws, -1)
        cam2world, K_norm = (cam2world_fixed, K_fixed) if labels is not None else problem.orbit(yaw, pitch)
        rgb, alpha = render_latents(G, ws, cam2world, K_norm, resolution, problem.background, s.backend)
        loss = problem.loss(rgb, alpha, target_rgb, target_alpha)
        _step(optimizer, loss.sum())
        if learn_camera:
            with torch.no_grad():
                pitch.clamp_(-1.4, 1.4)
        last = loss.detach()
        history.append(float(last.mean()))
        session.report(stage, step, steps, last, rgb, yaw if labels is None else None,
                       pitch if labels is None else None)
    detach = lambda t: None if t is None else t.detach()  # noqa: E731
    return u.detach(), detach(yaw), detach(pitch), history, last


def _fit_wplus(
    problem: _Problem, session: _Session, steps: int, w: Tensor, cam2world: Tensor, K_norm: Tensor,
) -> tuple[Tensor, list[float], Tensor]:
    """Adam on per-row offsets d: ws = w + scale * d, with wplus_reg * mean(d^2). Returns ws, history, last."""
    s, G = problem.settings, problem.G
    resolution = problem.target.resolution
    base = w[:, None].expand(-1, G.config.num_ws, -1).detach()
    d = torch.zeros_like(base, requires_grad=True)
    optimizer = torch.optim.Adam([d], lr=0.0, betas=(0.9, 0.999))
    target_rgb, target_alpha = problem.targets_at(resolution)
    history: list[float] = []
    last = torch.zeros(w.shape[0], device=w.device)
    for step in range(1, steps + 1):
        session.check_cancel("w+", step)
        optimizer.param_groups[0]["lr"] = s.lr_wplus * _lr_ramp((step - 0.5) / steps)
        ws = base + problem.scale * d
        rgb, alpha = render_latents(G, ws, cam2world, K_norm, resolution, problem.background, s.backend)
        loss = problem.loss(rgb, alpha, target_rgb, target_alpha)
        total = loss + s.wplus_reg * d.square().mean((1, 2))
        _step(optimizer, total.sum())
        last = loss.detach()
        history.append(float(last.mean()))
        session.report("w+", step, steps, last, rgb)
    return (base + problem.scale * d).detach(), history, last


def _search(problem: _Problem, session: _Session) -> tuple[Tensor, Tensor, Tensor, list[float]]:
    """Camera "auto": (yaw [B], pitch [B] radians, u [B, w_dim], history) of the best short fit."""
    s, G = problem.settings, problem.G
    device = problem.w_avg.device
    B = problem.target.batch_size
    size = min(s.search_resolution, problem.target.resolution)
    lo, hi = (math.radians(v) for v in s.search_yaw_range_deg)
    full_turn = hi - lo >= 2 * math.pi - 1e-6
    n = s.search_yaws
    yaws = [lo + (hi - lo) * (i / n if full_turn else (i / (n - 1) if n > 1 else 0.5)) for i in range(n)]
    grid = torch.tensor([(y, math.radians(p)) for y in yaws for p in s.search_pitches_deg], device=device)  # [C, 2]
    C = len(grid)
    # 1. score every grid camera with a few typical heads, the best of them per camera (no gradients:
    #    the fast renderers): the average head alone mistakes the back of a dark-haired head for its face
    target_rgb, target_alpha = problem.targets_at(size)
    heads = search_heads(problem)  # [L, w_dim]
    pairs = [(h, c) for h in range(len(heads)) for c in range(C)]
    scores = torch.full((B, C), math.inf, device=device)
    chunk = 64
    with torch.no_grad():
        for start in range(0, len(pairs), chunk):
            part = torch.tensor(pairs[start:start + chunk], device=device)  # [n, 2] (head, camera)
            cams = grid[part[:, 1]]
            cam2world, K_norm = problem.orbit(cams[:, 0], cams[:, 1])
            ws = heads[part[:, 0]][:, None].expand(-1, G.config.num_ws, -1)
            rgb, alpha = render_latents(G, ws, cam2world, K_norm, size, problem.background, s.backend)
            for j, c in enumerate(part[:, 1].tolist()):
                one_rgb, one_alpha = rgb[j:j + 1].expand(B, -1, -1, -1), alpha[j:j + 1].expand(B, -1, -1, -1)
                loss = problem.loss(one_rgb, one_alpha, target_rgb, target_alpha)
                scores[:, c] = torch.minimum(scores[:, c], loss)
    # 2. keep the best few per image, apart in yaw (at least 1.5 grid steps: not all on one peak)
    keep = min(s.search_keep, C)
    spacing = 1.5 * (hi - lo) / max(n, 1)
    picks = torch.empty(B, keep, dtype=torch.long)
    grid_yaws, orders = grid[:, 0].tolist(), scores.argsort(dim=1).tolist()  # on the host: many tiny steps
    for b in range(B):
        order = orders[b]
        chosen: list[int] = []
        for c in order:
            if len(chosen) == keep:
                break
            dy = [abs(math.remainder(grid_yaws[c] - grid_yaws[k], 2 * math.pi)) for k in chosen]
            if all(d >= spacing for d in dy):
                chosen.append(c)
        for c in order:  # fewer far-apart ones than asked: fill with the next best
            if len(chosen) == keep:
                break
            if c not in chosen:
                chosen.append(c)
        picks[b] = torch.tensor(chosen)
    start_cams = grid[picks.to(device).flatten()]  # [B * keep, 2], image-major
    # 3. a short joint fit from each (images in groups of at most search_batch fits); the lowest loss wins
    per_group = max(1, s.search_batch // keep)
    out_yaw, out_pitch, out_u, history = [], [], [], []
    for first in range(0, B, per_group):
        images = list(range(first, min(first + per_group, B)))
        n_img = len(images)
        part = replace(problem, target=problem.target.select(images))
        cams = start_cams[first * keep:(first + n_img) * keep]
        u0 = torch.zeros(n_img * keep, G.config.w_dim, device=device)
        u, yaw, pitch, curve, last = _fit_w(part, session, "search", s.search_steps, size, u0, None,
                                            cams[:, 0], cams[:, 1], learn_camera=True, lr_camera_scale=2.0,
                                            repeat=keep)
        history = curve if not history else [(a * first + b * n_img) / (first + n_img) for a, b in zip(history, curve)]
        if s.search_steps == 0:  # no fit: the grid's score decides
            best = torch.zeros(n_img, dtype=torch.long, device=device)
        else:
            best = last.view(n_img, keep).argmin(1)
        index = torch.arange(n_img, device=device) * keep + best
        out_yaw.append(yaw[index])
        out_pitch.append(pitch[index])
        out_u.append(u[index])
    return torch.cat(out_yaw), torch.cat(out_pitch), torch.cat(out_u), history


def search_heads(problem: _Problem) -> Tensor:  # [1 + search_latents, w_dim]
    """The heads the camera search scores with: the average one, and a few drawn ones pulled halfway to it
    (psi 0.7; the same ones every time)."""
    s, G = problem.settings, problem.G
    if s.search_latents <= 0:
        return problem.w_avg[None]
    device = problem.w_avg.device
    z = torch.randn(s.search_latents, G.config.z_dim, generator=torch.Generator().manual_seed(s.seed + 7)).to(device)
    with torch.no_grad():
        w = G.mapping(z, conditioning_labels(G, problem.prior, len(z), device))[:, 0].float()
    return torch.cat([problem.w_avg[None], problem.w_avg + 0.7 * (w - problem.w_avg)])


def fit_latents(
    G: nn.Module,
    target: Target,
    labels: Tensor | None = None,  # [B, 25] the images' cameras; None estimates them ("auto")
    settings: InvertSettings | None = None,
    *,
    prior: OrbitPose | None = None,  # the checkpoint's camera: radius, pivot and fov of estimated cameras
    perceptual: Perceptual | None = None,
    progress: Callable[[InversionProgress], None] | None = None,
    cancel: Cancel = None,
    w_stats: tuple[Tensor, float] | None = None,  # (w_avg, scale) when already known
    _session: _Session | None = None,
) -> LatentFit:
    """The search (camera "auto"), W and W+ (modes "w+" and "pti") stages for a batch of images.
    G is used, never modified; its parameters need no gradients."""
    settings = (settings or InvertSettings()).check()
    prior = prior or OrbitPose()
    device = w_avg_of(G).device
    target = target.to(device)
    auto = labels is None
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.float32).reshape(-1, 25).to(device)
        if len(labels) != target.batch_size:
            raise ConfigError(f"{len(labels)} camera labels for {target.batch_size} images")
    w_avg, scale = w_stats if w_stats is not None else w_statistics(G, prior, settings.w_samples, settings.seed)
    problem = _Problem(G, target, settings, prior, w_avg.to(device), scale, perceptual,
                       fit_alpha=target.alpha is not None and not has_background(G))
    steps = stage_steps(settings, auto, target.batch_size)
    session = _session or _Session(settings, sum(v for k, v in steps.items() if k != "pti"), progress, cancel)
    losses: dict[str, list[float]] = {}
    final: dict[str, Tensor] = {}
    B = target.batch_size
    u = torch.zeros(B, G.config.w_dim, device=device)
    yaw = pitch = None
    with torch.enable_grad():
        if auto:
            yaw, pitch, u, losses["search"] = _search(problem, session)
        u, yaw, pitch, losses["w"], final["w"] = _fit_w(
            problem, session, "w", settings.w_steps, target.resolution, u, labels, yaw, pitch,
            learn_camera=auto and settings.refine_camera,
            noise_scale=0.25 if auto else 1.0)  # after the search: near a fit already, explore less
        w = w_avg.to(device) + scale * u
        if auto:
            cam2world, K_norm = problem.orbit(yaw, pitch)
            labels = cameras_to_labels(cam2world, K_norm).detach()
        cam2world, K_norm = labels_to_cameras(labels)
        ws = w[:, None].expand(-1, G.config.num_ws, -1).clone()
        if steps["w+"]:
            ws, losses["w+"], final["w+"] = _fit_wplus(problem, session, steps["w+"], w, cam2world, K_norm)
    cpu = lambda t: None if t is None else t.detach().float().cpu()  # noqa: E731
    return LatentFit(
        w=cpu(w), ws=cpu(ws), labels=cpu(labels),
        yaw_deg=None if yaw is None else torch.rad2deg(cpu(yaw)),
        pitch_deg=None if pitch is None else torch.rad2deg(cpu(pitch)),
        losses=losses, final={k: cpu(v) for k, v in final.items()},
    )


def tune_generator(
    G: nn.Module,
    target: Target,  # a batch of one
    ws: Tensor,  # [1, num_ws, w_dim] the pivot
    label: Tensor,  # [25] or [1, 25] its camera
    settings: InvertSettings | None = None,
    *,
    prior: OrbitPose | None = None,  # its pivot is the axis the regularising views turn about
    perceptual: Perceptual | None = None,
    progress: Callable[[InversionProgress], None] | None = None,
    cancel: Cancel = None,
    _session: _Session | None = None,
) -> tuple[nn.Module, list[float], float]:
    """Pivotal tuning: a copy of G whose synthesis is tuned so that ws renders the image.
    Returns (the tuned copy, batch-mean loss per step, the final image loss)."""
    settings = (settings or InvertSettings(mode="pti")).check()
    prior = prior or OrbitPose()
    if target.batch_size != 1:
        raise ConfigError(f"pivotal tuning tunes one generator per image; got {target.batch_size} images")
    device = w_avg_of(G).device
    target = target.to(device)
    ws = ws.to(device).reshape(1, G.config.num_ws, G.config.w_dim).detach()
    cam2world, K_norm = labels_to_cameras(torch.as_tensor(label, dtype=torch.float32).reshape(1, 25).to(device))
    session = _session or _Session(settings, settings.pti_steps, progress, cancel)
    problem = _Problem(G, target, settings, prior, w_avg_of(G).detach(), 1.0, perceptual,
                       fit_alpha=target.alpha is not None and not has_background(G))
    resolution = target.resolution
    tuned = copy.deepcopy(G).eval()
    frozen = mapping_parameter_names(tuned)
    if settings.pti_freeze_view_colour:
        frozen |= view_colour_parameter_names(tuned)
    params = []
    for name, p in tuned.named_parameters():
        p.requires_grad_(name not in frozen)
        if name not in frozen:
            params.append(p)
    optimizer = torch.optim.Adam(params, lr=settings.lr_pti, betas=(0.9, 0.999))
    target_rgb, target_alpha = problem.targets_at(resolution)
    views = [rotate_cameras(cam2world[0], math.radians(a), prior.pivot) for a in settings.pti_view_yaws_deg]
    use_views = settings.pti_view_weight > 0 and views
    if use_views:
        view_c2w = torch.stack(views)  # [V, 4, 4]
        view_K = K_norm.expand(len(views), 3, 3)
        with torch.no_grad():
            ref_rgb, ref_alpha, ref_depth = render_latents(G, ws.expand(len(views), -1, -1), view_c2w, view_K,
                                                           resolution, problem.background, settings.backend, depth=True)
        all_c2w, all_K = torch.cat([cam2world, view_c2w]), torch.cat([K_norm, view_K])
        depth_unit = max(float(prior.radius), 1e-6)  # depth differences in units of the camera distance
    history: list[float] = []
    last = float("nan")
    with torch.enable_grad():
        for step in range(1, settings.pti_steps + 1):
            session.check_cancel("pti", step)
            if use_views:
                rgb_all, alpha_all, depth_all = render_latents(tuned, ws.expand(len(all_c2w), -1, -1), all_c2w, all_K,
                                                               resolution, problem.background, settings.backend,
                                                               depth=True)
                rgb, alpha = rgb_all[:1], alpha_all[:1]
                both = torch.minimum(alpha_all[1:], ref_alpha).detach()  # depth where both draw something
                keep = (alpha_all[1:] - ref_alpha).abs().mean() + (
                    both * (depth_all[1:] - ref_depth).abs()).mean() / depth_unit
                if settings.pti_view_colour:
                    keep = keep + (rgb_all[1:] - ref_rgb).abs().mean()
            else:
                rgb, alpha = render_latents(tuned, ws, cam2world, K_norm, resolution, problem.background,
                                            settings.backend)
                keep = rgb.new_zeros(())
            loss = problem.loss(rgb, alpha, target_rgb, target_alpha)
            optimizer.zero_grad(set_to_none=True)
            (loss.sum() + settings.pti_view_weight * keep).backward()
            optimizer.step()
            last = float(loss.detach().mean())
            history.append(last)
            session.report("pti", step, settings.pti_steps, loss.detach(), rgb)
    tuned.requires_grad_(False)
    return tuned, history, last
