"""The training loop, top to bottom: `train(config)`.

One process or many (torchrun sets WORLD_SIZE/RANK/LOCAL_RANK): every process takes batch /
world_size images per step; gradients are averaged across processes with one all-reduce per
network and phase (as StyleGAN2-ADA does: G is called through several methods, which DDP's module
wrapper does not follow); only rank 0 writes files.

Each step:
  G phase   z, cameras -> Gaussians -> images -> D -> G loss (+ pose, centre, kNN) -> Adam step
  D phase   fakes (no G grad) and reals -> D -> logistic loss (+ pose on reals, lazy R1) -> Adam step
  G_ema     exponential moving average of G
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from gsgan_core.cameras import OrbitPose, camera_forward, labels_to_cameras, orbit_camera, to_rasterizer
from gsgan_core.data.dataset import ImageDataset, check_dataset, composite
from gsgan_core.errors import ConfigError, DatasetError, TrainingError
from gsgan_core.io.atomic import atomic_write_bytes
from gsgan_core.io.checkpoint import save_checkpoint
from gsgan_core.io.open import load_generator
from gsgan_core.models import build_generator
from gsgan_core.models.config import PRESETS, AnyConfig, preset
from gsgan_core.models.discriminator import Discriminator
from gsgan_core.models.generator import Generator, z_from_seeds
from gsgan_core.render import render
from gsgan_core.train import losses
from gsgan_core.train.config import D_FIELDS, G_FIELDS, TrainConfig
from gsgan_core.train.state import (
    STATE_FILE,
    load_into,
    modulate_training_state,
    read_training_state,
    save_training_state,
)

BACKGROUND_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


# ====================================================================== processes
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_request: str) -> Dist:
    """Reads torchrun's environment; NCCL on CUDA, gloo on CPU. A plain `python` run is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_request == "cuda" or (device_request == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return Dist(rank, world_size, device)


def all_reduce_mean_(tensor: Tensor, world: Dist) -> Tensor:
    if world.world_size > 1:
        dist.all_reduce(tensor)
        tensor /= world.world_size
    return tensor


def average_gradients(params: list[torch.nn.Parameter], world: Dist) -> Tensor:
    """Averages gradients over processes in one flat all-reduce; returns the flat gradient.

    Parameters without a gradient this phase count as zeros, so every process sends the same shape.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    all_reduce_mean_(flat, world)
    offset = 0
    for p in params:  # each gradient becomes a view into the averaged flat buffer
        p.grad = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


def apply_gradients(
    name: str,  # "G" or "D", for the error message
    loss: Tensor,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    clip: float,  # gradient-norm clip; <= 0: none
    world: Dist,
    step: int,
    kimg: float,
    outdir: Path,
) -> Tensor:
    """One optimiser step: backward, average over processes, stop on a non-finite value, clip, step.

    Returns the gradient norm (before clipping). The check happens before the step, so a NaN never
    reaches the weights and the last snapshot stays good.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    flat = average_gradients(params, world)
    if not bool(torch.isfinite(loss)) or not bool(torch.isfinite(flat).all()):
        raise TrainingError(f"non-finite {name} loss or gradient at step {step} (kimg {kimg:.3f}): "
                            f"loss {float(loss.detach()):.4g}; the last good snapshot is kept in {outdir}")
    norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 else flat.norm()
    optimizer.step()
    return norm


# ====================================================================== data order
class StepBatches(torch.utils.data.Sampler):
    """Index lists for one process, step after step, forever; a function of (seed, step) only.

    The global batch of step s is positions [s*B, (s+1)*B) of an endless sequence of shuffled epochs
    (epoch e shuffled with seed + e); process r takes its slice. So resuming at step s only needs s.
    """

    def __init__(self, num_items: int, batch: int, world: Dist, seed: int, start_step: int):
        self.num_items, self.batch, self.world = num_items, batch, world
        self.seed, self.start_step = seed, start_step
        self.per_process = batch // world.world_size

    def _epoch(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}  # keep at most a few
            self._cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return self._cache[epoch]

    def __iter__(self):
        self._cache: dict[int, np.ndarray] = {}
        step = self.start_step
        while True:
            start = step * self.batch + self.world.rank * self.per_process
            positions = range(start, start + self.per_process)
            yield [int(self._epoch(p // self.num_items)[p % self.num_items]) for p in positions]
            step += 1


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The random numbers of one step on one process, from (seed, rank, step): exact resume, no state."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))


def _ignore_interrupts(worker_id: int) -> None:
    """Data workers leave Ctrl-C and SIGTERM (sent to the whole process group by terminals and job
    schedulers) to the main process, which finishes the step, saves, then shuts the workers down.
    A worker still exits if the main process dies: PyTorch's workers watch their parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ====================================================================== fakes
def background_colors(kind: str, n: int, rng: torch.Generator) -> Tensor:  # -> [n, 3] in [0, 1]
    if kind == "random":
        return torch.rand(n, 3, generator=rng)
    return torch.tensor(BACKGROUND_COLORS[kind]).expand(n, 3)


def generate_images(
    G: Generator,
    z: Tensor,  # [B, z_dim]
    mapping_labels: Tensor | None,  # [B, 25] camera labels the mapping sees (pose-conditioned G only)
    render_labels: Tensor,  # [B, V, 25] cameras to render each scene from
    backgrounds: Tensor,  # [B, V, 3]
    resolution: int,
    backend: str = "auto",
    update_w_avg: bool = False,
    supersample: int = 1,  # render at R * supersample and average down (render()'s box filter)
) -> tuple[Tensor, Tensor]:  # images [B*V, 3, R, R] in [-1, 1], level-0 anchor means [B, N0, 3]
    B, V = render_labels.shape[:2]
    cam2world, K_norm = labels_to_cameras(render_labels)  # [B, V, 4, 4], [B, V, 3, 3]
    viewmats, Ks = to_rasterizer(cam2world, K_norm, resolution, resolution, G.config.camera_model)
    ws = G.mapping(z, mapping_labels, update_w_avg=update_w_avg)  # [B, num_ws, w_dim]
    if G.config.view_dependent_color and V > 1:
        # The colour head sees one view direction per scene: synthesise once per view. Geometry
        # does not see the direction, so the V copies are the same scene.
        gaussians, anchors = G.synthesize(
            ws.repeat_interleave(V, dim=0), camera_forward(cam2world).flatten(0, 1), return_anchors=True
        )
        out = render(gaussians, viewmats.flatten(0, 1)[:, None], Ks.flatten(0, 1)[:, None], resolution, resolution,
                     background=backgrounds.flatten(0, 1)[:, None], backend=backend, supersample=supersample)
        anchor_means = anchors[0].mean[::V]
    else:
        view_dirs = camera_forward(cam2world[:, 0]) if G.config.view_dependent_color else None
        gaussians, anchors = G.synthesize(ws, view_dirs, return_anchors=True)
        out = render(gaussians, viewmats, Ks, resolution, resolution, background=backgrounds, backend=backend,
                     supersample=supersample)
        anchor_means = anchors[0].mean
    images = out.rgb.flatten(0, 1).permute(0, 3, 1, 2)  # [B*V, 3, R, R]
    return images * 2 - 1, anchor_means


def random_labels(all_labels: Tensor, n: int, rng: torch.Generator) -> Tensor:  # [N, 25] -> [n, 25]
    return all_labels[torch.randint(len(all_labels), (n,), generator=rng)]


# ====================================================================== snapshots
def snapshot_grid(G_ema: Generator, config: TrainConfig, resolution: int, pose: OrbitPose, device) -> np.ndarray:
    """Fixed seeds (rows) from fixed yaws (columns) around the data's orbit pose: uint8 [rows*R, cols*R, 3]."""
    yaws = [float(y) for y in config.grid_yaws.split(",")]
    seeds = list(range(config.grid_seeds))
    cam2world, K_norm = orbit_camera(torch.tensor(yaws), pose.pitch, pose.radius, pose.pivot, pose.fov_deg)
    from gsgan_core.cameras import cameras_to_labels

    labels = cameras_to_labels(cam2world, K_norm.expand(len(yaws), 3, 3)).float().to(device)  # [V, 25]
    z = z_from_seeds(seeds, G_ema.config.z_dim, device)
    mapping_labels = labels[len(yaws) // 2].expand(len(seeds), 25) if G_ema.config.c_dim else None
    background = torch.ones(len(seeds), len(yaws), 3, device=device)
    with torch.no_grad():
        images, _ = generate_images(G_ema, z, mapping_labels, labels.expand(len(seeds), -1, -1), background,
                                    resolution, config.render_backend, supersample=config.render_supersample)
    images = ((images + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu()  # [S*V, 3, R, R]
    grid = images.view(len(seeds), len(yaws), 3, resolution, resolution).permute(0, 3, 1, 4, 2)
    return grid.reshape(len(seeds) * resolution, len(yaws) * resolution, 3).numpy()


def write_png(path: Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    atomic_write_bytes(path, iio.imwrite("<bytes>", image, extension=".png"))


# ====================================================================== the loop
def modulated_levels(value: str, preset_name: str) -> tuple[bool, ...]:
    """--g-modulated as one flag per level; empty means the preset's."""
    return tuple(v == "1" for v in value.split(",")) if value else preset(preset_name).modulated


@dataclass
class TrainResult:
    step: int
    nimg: int
    scalars: dict  # the last logged averages
    G: Generator
    D: Discriminator
    G_ema: Generator


# GeneratorConfig fields that gsgan-train sets from a flag; the others come from --preset.
_G_FLAGS = {
    "image_resolution": "--resolution (or the dataset's)", "c_dim": "--g-pose-cond", "background": "--g-background",
    "soft_clamp": "--g-soft-clamp", "anchor_floor_pixels": "--g-anchor-floor-pixels",
    "view_dependent_color": "--g-view-dependent-color", "modulated": "--g-modulated",
}


# Flags that only the lite architecture has, with their defaults: the gsgan (official) presets refuse others.
_LITE_ONLY_FLAGS = {"g_background": True, "g_soft_clamp": False, "g_anchor_floor_pixels": 0.0,
                    "g_view_dependent_color": True, "g_modulated": ""}


def generator_config(config: TrainConfig, resolution: int, modulated: tuple[bool, ...]) -> AnyConfig:
    """The generator --preset and the G flags describe, for images of `resolution`."""
    if PRESETS.get(config.preset) is not None and PRESETS[config.preset].architecture == "gsgan":
        for name, default in _LITE_ONLY_FLAGS.items():
            if getattr(config, name) != default:
                raise ConfigError(f"--{name.replace('_', '-')} applies to the lite architecture; --preset "
                                  f"{config.preset} is the official GSGAN network, which has no such switch")
        # The official network keeps its 25-value label input; without pose conditioning it sees zeros.
        return preset(config.preset, image_resolution=resolution, c_zero=not config.g_pose_cond)
    return preset(
        config.preset, image_resolution=resolution, c_dim=25 if config.g_pose_cond else 0,
        background=config.g_background, soft_clamp=config.g_soft_clamp,
        anchor_floor_pixels=config.g_anchor_floor_pixels,
        view_dependent_color=config.g_view_dependent_color, modulated=modulated,
    )


def check_init_generator(path: str, saved: AnyConfig, built: AnyConfig) -> None:
    """TrainingError naming each field where the --init-g checkpoint's generator differs from the flags'."""
    if type(saved) is not type(built):
        raise TrainingError(f"{path}: its generator is the {saved.architecture} architecture; "
                            f"this --preset builds the {built.architecture} one")
    changed = [f.name for f in dataclasses.fields(built) if getattr(saved, f.name) != getattr(built, f.name)]
    if changed:
        raise TrainingError(
            f"{path}: its generator is not the one these flags build: "
            + "; ".join(f"{name} is {getattr(saved, name)!r} in the file, {getattr(built, name)!r} from "
                        f"{_G_FLAGS.get(name, '--preset')}" for name in changed)
            + " (pass the flags it was trained with)"
        )


def train(config: TrainConfig) -> TrainResult:
    """Trains until config.kimg (or max_steps, max_minutes, or a stop signal); every process returns its networks."""
    world = init_distributed(config.device)
    device = world.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest convolutions
    outdir = Path(config.outdir)

    # --- resume: the saved config decides everything that shapes the networks (G's alone with --resume-new-d)
    modulated = modulated_levels(config.g_modulated, config.preset)
    resume_tensors, resume_info, saved_modulated = None, None, modulated
    if config.resume:
        resume_tensors, resume_info = read_training_state(config.resume)
        defaults = TrainConfig()  # a state saved before a field existed was trained with its default
        saved = {**{f: getattr(defaults, f) for f in G_FIELDS + D_FIELDS}, **resume_info["config"]}
        fields = G_FIELDS if config.resume_new_d else G_FIELDS + D_FIELDS
        changed = [f for f in fields if f != "g_modulated" and saved[f] != getattr(config, f)]
        hint = ""
        if not changed:  # "" (the preset's) and the same levels spelt out are one generator
            saved_modulated = modulated_levels(saved["g_modulated"], saved["preset"])
            widens = all(now or not was for was, now in zip(saved_modulated, modulated))
            if saved_modulated != modulated and not (config.resume_modulate and widens):
                changed.append("g_modulated")
                saved["g_modulated"] = ",".join(str(int(v)) for v in saved_modulated)
                hint = (" (--resume-modulate w-modulates more levels of a saved G)" if widens else
                        f" (a saved G's w-modulated levels cannot become plain: pass --g-modulated {saved['g_modulated']})")
        if changed:
            raise TrainingError(
                f"{config.resume}: cannot resume with a different {', '.join(changed)} "
                f"(saved: {', '.join(f'{f}={saved[f]!r}' for f in changed)}){hint}"
            )
        if not config.data:
            config.data = saved["data"]
    elif (outdir / STATE_FILE).exists():
        raise TrainingError(f"{outdir} already holds a training run; pass --resume {outdir} or choose another --outdir")
    init_G, init_info = load_generator(config.init_g) if config.init_g else (None, None)  # read before the data

    # --- data: validated in full before anything else happens
    problem = None
    if world.is_main:
        try:
            info = check_dataset(config.data, progress=True)
            print(f"dataset {config.data}: {info.num_images} images, {info.resolution}x{info.resolution}, "
                  f"{'RGBA' if info.channels == 4 else 'RGB'}", flush=True)
        except DatasetError as err:
            problem = err
    if world.world_size > 1:  # every process stops if rank 0 found a problem (none waits forever)
        flag = torch.tensor([float(problem is not None)], device=device)
        dist.broadcast(flag, src=0)
        if flag.item() and problem is None:
            raise TrainingError(f"{config.data}: rank 0 found a problem with the dataset (see its message)")
    if problem is not None:
        raise problem
    dataset = ImageDataset(config.data, xflip=config.xflip)
    resolution = config.resolution or dataset.resolution
    if resolution < 8 or resolution & (resolution - 1):
        raise TrainingError(f"training resolution must be a power of two >= 8 (the discriminator halves it down "
                            f"to 4x4), got {resolution}; pass --resolution to resize")
    if config.batch % world.world_size:
        raise TrainingError(f"--batch {config.batch} does not divide over {world.world_size} processes")
    batch_gpu = config.batch // world.world_size
    all_labels = dataset.labels.to(device)  # [N, 25] fakes are rendered from the dataset's cameras

    # --- networks and optimisers
    torch.manual_seed(config.seed)  # identical initial weights on every process
    g_config = generator_config(config, resolution, modulated)
    if resume_tensors is not None and saved_modulated != modulated:  # --resume-modulate: widen the saved G
        resume_tensors, resume_info = modulate_training_state(
            resume_tensors, resume_info, dataclasses.replace(g_config, modulated=saved_modulated), g_config)
    G = build_generator(g_config)
    if init_info is not None:
        check_init_generator(config.init_g, init_info.config, g_config)
        G.load_state_dict(init_G.state_dict())
    G = G.to(device).train()
    D = Discriminator(resolution, config.d_pose, config.d_channel_base, config.d_channel_max,
                      config.d_mbstd_group).to(device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    betas = (config.adam_beta1, config.adam_beta2)
    opt_G = torch.optim.Adam(G.parameters(), lr=config.g_lr, betas=betas, eps=1e-8)
    # Lazy R1 makes each D step 1/interval heavier: StyleGAN2's correction of lr and betas
    ratio = config.r1_interval / (config.r1_interval + 1) if config.r1_interval else 1.0
    opt_D = torch.optim.Adam(D.parameters(), lr=config.d_lr * ratio, betas=tuple(b**ratio for b in betas), eps=1e-8)
    modules, optimizers = {"G": G, "D": D, "G_ema": G_ema}, {"opt_G": opt_G, "opt_D": opt_D}
    step, nimg = 0, 0
    d_start_nimg = 0  # when the discriminator started: G stays still for d_warmup_kimg after it
    if resume_tensors is not None:
        if config.resume_new_d:  # the new D (and its optimiser) keep their fresh initial state
            load_into(resume_tensors, resume_info, {"G": G, "G_ema": G_ema}, {"opt_G": opt_G})
        else:
            load_into(resume_tensors, resume_info, modules, optimizers)  # lr and betas stay this run's flags
        progress_info = resume_info["progress"]
        step, nimg = int(progress_info["step"]), int(progress_info["nimg"])
        d_start_nimg = nimg if config.resume_new_d else int(progress_info.get("d_start_nimg", 0))
        del resume_tensors
    elif init_info is not None:  # the checkpoint's progress goes on (the EMA ramp-up, blur and swap fades are over)
        step, nimg = int(init_info.training.get("step", 0)), round(init_info.kimg * 1000)
        d_start_nimg = nimg  # a new D: G stays still for --d-warmup-kimg from here
    G_params, D_params = list(G.parameters()), list(D.parameters())

    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(len(dataset), config.batch, world, config.seed, step),
        num_workers=config.workers, pin_memory=device.type == "cuda", persistent_workers=config.workers > 0,
        worker_init_fn=_ignore_interrupts,
    )
    real_batches = iter(loader)

    # --- outputs (rank 0 only)
    checkpoint_meta = dict(dataset={"name": dataset.name, "resolution": resolution},
                           camera=OrbitPose.from_labels(dataset.labels))  # the viewer's default: the data's
    log_file = None
    if world.is_main:
        outdir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(outdir / "training_options.json", json.dumps(config.to_dict(), indent=2).encode())
        log_file = open(outdir / "log.jsonl", "a")

    def save_snapshot(final: bool = False) -> None:
        if not world.is_main:
            return
        kimg = nimg / 1000
        tag = f"{kimg:010.3f}" if not final else "final"  # kimg, zero-padded so names sort
        training = {"kimg": kimg, "step": step, "render_supersample": config.render_supersample}
        save_checkpoint(outdir / f"network-snapshot-{tag}.safetensors", G_ema, training=training, **checkpoint_meta)
        save_checkpoint(outdir / "network-latest.safetensors", G_ema, training=training, **checkpoint_meta)
        write_png(outdir / f"fakes-{tag}.png", snapshot_grid(G_ema, config, resolution, checkpoint_meta["camera"], device))
        save_training_state(outdir / STATE_FILE, modules, optimizers, config.to_dict(),
                            {"step": step, "nimg": nimg, "d_start_nimg": d_start_nimg},
                            averages_dtype=getattr(torch, config.state_precision))

    # --- Ctrl-C / SIGTERM: finish the step, write a final snapshot, stop
    stop_requested = False

    def request_stop(signum, frame):
        nonlocal stop_requested
        stop_requested = True

    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():  # Python only lets the main thread set handlers
        previous_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    total_nimg = int(config.kimg * 1000)
    next_snapshot = (nimg // int(config.snap_kimg * 1000) + 1) * int(config.snap_kimg * 1000)
    sums: dict[str, float] = {}
    sums_count = 0
    last: dict = {}
    start_time, start_nimg = time.time(), nimg
    progress = None
    if world.is_main:
        from tqdm import tqdm

        progress = tqdm(total=total_nimg, initial=nimg, unit="img", unit_scale=True, desc="training",
                        dynamic_ncols=True, smoothing=0.1)
    steps_this_run = 0
    try:
        while nimg < total_nimg and not (config.max_steps and steps_this_run >= config.max_steps):
            rng = step_generator(config.seed, world.rank, step)
            kimg = nimg / 1000
            sigma = losses.blur_sigma_at(kimg, config.blur_sigma, config.blur_fade_kimg, resolution)
            V = config.views

            # ---------------------------------------------------------------- inputs of this step
            real_uint8, real_labels = next(real_batches)  # [b, 4, R0, R0] uint8, [b, 25]
            real_images = composite(real_uint8.to(device), background_colors(config.background, batch_gpu, rng).to(device))
            if real_images.shape[-1] != resolution:
                real_images = F.interpolate(real_images, size=(resolution, resolution), mode="area")
            real_labels = real_labels.to(device)
            z = torch.randn(batch_gpu, g_config.z_dim, generator=rng).to(device)
            fake_labels = random_labels(all_labels, batch_gpu, rng)  # [b, 25]
            # multi-view: view v of scene i is camera i + v of the batch (cameras rolled)
            render_labels = torch.stack([fake_labels.roll(v, dims=0) for v in range(V)], dim=1)  # [b, V, 25]
            mapping_labels = None
            if g_config.c_dim:  # GSGAN: the mapping sees the camera, sometimes another one
                fade = min(kimg / config.c_swap_fade_kimg, 1.0) if config.c_swap_fade_kimg > 0 else 1.0
                swap_prob = (1 - fade) * 1.0 + fade * config.c_swap_prob  # early on: mostly random cameras
                swap = (torch.rand(batch_gpu, generator=rng) < swap_prob).to(device)
                mapping_labels = torch.where(swap[:, None], random_labels(all_labels, batch_gpu, rng), fake_labels)
            fake_bg = background_colors(config.background, batch_gpu * V, rng).view(batch_gpu, V, 3).to(device)
            do_r1 = config.r1_interval > 0 and config.r1_gamma > 0 and step % config.r1_interval == 0

            # ---------------------------------------------------------------- G phase
            g_still = nimg - d_start_nimg < config.d_warmup_kimg * 1000  # a new D learns before it steers G
            if g_still:
                loss_G = loss_g_adv = loss_g_pose = loss_center = loss_knn = g_grad_norm = torch.zeros((), device=device)
            else:
                G.requires_grad_(True)
                D.requires_grad_(False)
                fake_images, anchor_means = generate_images(G, z, mapping_labels, render_labels, fake_bg, resolution,
                                                            config.render_backend, update_w_avg=True,
                                                            supersample=config.render_supersample)
                d_fake = D(losses.blur_images(fake_images, sigma), render_labels.flatten(0, 1))
                loss_g_adv = losses.g_nonsaturating(d_fake.logits)
                loss_g_pose = torch.zeros((), device=device)
                if config.d_pose == "contrastive" and config.pose_weight > 0:
                    loss_g_pose = losses.infonce_pose_loss(d_fake.image_pose, d_fake.camera_pose, config.pose_temperature)
                loss_center = losses.center_loss(anchor_means)
                loss_knn = losses.knn_loss(anchor_means, config.knn_k)
                loss_G = (loss_g_adv + config.pose_weight * loss_g_pose
                          + config.lambda_center * loss_center + config.lambda_knn * loss_knn)
                g_grad_norm = apply_gradients("G", loss_G, G_params, opt_G, config.g_clip, world, step, kimg, outdir)

            # ---------------------------------------------------------------- D phase
            G.requires_grad_(False)
            D.requires_grad_(True)
            with torch.no_grad():
                fake_images, _ = generate_images(G, z, mapping_labels, render_labels, fake_bg, resolution,
                                                 config.render_backend, supersample=config.render_supersample)
            d_fake = D(losses.blur_images(fake_images, sigma), render_labels.flatten(0, 1))
            real_input = real_images.detach().requires_grad_(do_r1)
            d_real = D(losses.blur_images(real_input, sigma), real_labels)
            loss_d_adv = losses.d_logistic(d_real.logits, d_fake.logits)
            loss_d_pose = torch.zeros((), device=device)
            if config.d_pose == "contrastive" and config.pose_weight > 0:  # pose term on reals only
                loss_d_pose = losses.infonce_pose_loss(d_real.image_pose, d_real.camera_pose, config.pose_temperature)
            loss_r1 = torch.zeros((), device=device)
            if do_r1:  # lazy: every r1_interval steps, scaled by the interval
                loss_r1 = losses.r1_penalty(real_input, d_real.logits).mean() * (config.r1_gamma / 2)
            loss_D = loss_d_adv + config.pose_weight * loss_d_pose + loss_r1 * config.r1_interval
            d_grad_norm = apply_gradients("D", loss_D, D_params, opt_D, config.d_clip, world, step, kimg, outdir)

            # ---------------------------------------------------------------- G_ema
            nimg += config.batch
            step += 1
            steps_this_run += 1
            beta = losses.ema_beta(config.batch, nimg, config.ema_kimg, config.ema_rampup)
            if not g_still:  # while G stays still, so does its average
                with torch.no_grad():
                    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                        p_ema.lerp_(p, 1 - beta)
                    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                        b_ema.copy_(b)

            # ---------------------------------------------------------------- bookkeeping
            if config.max_minutes and time.time() - start_time >= config.max_minutes * 60:
                stop_requested = True  # the time limit: stops every process together, like a signal
            scalars = torch.stack([loss_G, loss_g_adv, loss_g_pose, loss_center, loss_knn, loss_D, loss_d_adv,
                                   loss_d_pose, loss_r1, d_real.logits.mean(), d_fake.logits.mean(),
                                   g_grad_norm.detach(), d_grad_norm.detach(),
                                   torch.tensor(float(stop_requested), device=device)]).detach().float()
            all_reduce_mean_(scalars, world)
            names = ["loss/G", "loss/G_adv", "loss/G_pose", "loss/center", "loss/knn", "loss/D", "loss/D_adv",
                     "loss/D_pose", "loss/r1", "D/real", "D/fake", "grad_norm/G", "grad_norm/D"]
            values = scalars.tolist()
            stop_requested = stop_requested or values[-1] > 0  # any process asked: all stop together
            for name, value in zip(names, values):
                sums[name] = sums.get(name, 0.0) + value
            sums_count += 1
            if world.is_main:
                progress.update(config.batch)
                progress.set_postfix_str(
                    f"kimg {nimg / 1000:.2f} s/kimg {(time.time() - start_time) / max((nimg - start_nimg) / 1000, 1e-9):.1f} "
                    f"G {values[0]:.3f} D {values[5]:.3f} "
                    + (f"mem {torch.cuda.max_memory_allocated(device) / 2**30:.1f}G" if device.type == "cuda" else ""),
                    refresh=False,
                )
            if step % config.log_steps == 0 or nimg >= total_nimg:
                elapsed = time.time() - start_time
                last = {name: total / sums_count for name, total in sums.items()}
                last.update({
                    "step": step, "kimg": nimg / 1000, "time_s": elapsed, "blur_sigma": sigma, "ema_beta": beta,
                    "images_per_s": (nimg - start_nimg) / max(elapsed, 1e-9),
                    "s_per_kimg": elapsed / max((nimg - start_nimg) / 1000, 1e-9),
                })
                if device.type == "cuda":
                    last["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                sums, sums_count = {}, 0
                if world.is_main:
                    log_file.write(json.dumps(last) + "\n")
                    log_file.flush()
            if nimg >= next_snapshot:
                next_snapshot += int(config.snap_kimg * 1000)
                save_snapshot()
                if config.swd_images > 0 and world.is_main:
                    log_swd(G_ema, dataset, config, resolution, device, all_labels, log_file, step, nimg)
                if config.level_images > 0 and world.is_main:
                    log_levels(G_ema, config, resolution, device, all_labels, log_file, step, nimg)
            if stop_requested:
                if world.is_main:
                    progress.write(f"stop requested (signal or --max-minutes): writing a final snapshot at step {step}")
                break
        # the end: normal, max_steps, max_minutes, or a stop signal
        save_snapshot(final=True)
    finally:
        for s, handler in previous_handlers.items():
            signal.signal(s, handler)
        if progress is not None:
            progress.close()
        if log_file is not None:
            log_file.close()
    return TrainResult(step, nimg, last, G, D, G_ema)


def log_levels(G_ema, config, resolution, device, all_labels, log_file, step, nimg) -> None:
    """Each level's contribution to config.level_images images (metrics/levels, coarse to fine), and
    the median anchor log-scale per anchor level (metrics/anchor_log_scale).

    A level near 0 is dead: its Gaussians went below a pixel or transparent and get no gradient back.
    An anchor level at -8 (the clamp) has killed every level below it.
    """
    from gsgan_core.metrics.levels import anchor_log_scales, generator_level_contributions

    rng = torch.Generator().manual_seed(config.seed + 2)  # the same latents and cameras every snapshot
    n = config.level_images
    z = torch.randn(n, G_ema.config.z_dim, generator=rng).to(device)
    labels = random_labels(all_labels, n, rng).to(device)
    share = generator_level_contributions(G_ema, z, labels, resolution, config.render_backend)
    record = {"step": step, "kimg": nimg / 1000, "metrics/levels": [share[k] for k in sorted(share) if k >= 0],
              "metrics/anchor_log_scale": anchor_log_scales(G_ema, z, labels)}
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()


def log_swd(G_ema, dataset, config, resolution, device, all_labels, log_file, step, nimg) -> None:
    """SWD between config.swd_images fakes and as many reals, logged as metrics/swd."""
    from gsgan_core.metrics.swd import sliced_wasserstein

    n = min(config.swd_images, len(dataset))
    rng = torch.Generator().manual_seed(config.seed + 1)  # the same reals and latents every snapshot
    index = torch.randperm(len(dataset), generator=rng)[:n]
    reals = torch.stack([dataset[int(i)][0] for i in index])
    reals = composite(reals, torch.ones(n, 3))  # [n, 3, R, R] on white
    if reals.shape[-1] != resolution:
        reals = F.interpolate(reals, size=(resolution, resolution), mode="area")
    fakes = []
    with torch.no_grad():
        for start in range(0, n, 16):
            m = min(16, n - start)
            z = torch.randn(m, G_ema.config.z_dim, generator=rng).to(device)
            labels = random_labels(all_labels, m, rng)
            images, _ = generate_images(G_ema, z, labels if G_ema.config.c_dim else None, labels[:, None],
                                        torch.ones(m, 1, 3, device=device), resolution, config.render_backend,
                                        supersample=config.render_supersample)
            fakes.append(images.cpu())
    swd = sliced_wasserstein(reals, torch.cat(fakes), seed=config.seed, device=device)
    record = {"step": step, "kimg": nimg / 1000, "metrics/swd": swd["mean"], "metrics/swd_levels": swd["levels"]}
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()
