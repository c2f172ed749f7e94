"""Every training hyperparameter in one dataclass; defaults are the reference's (model doc, section 5).

`gsgan-train` exposes each field as `--field-name` (see `parse_args`): nothing is hidden elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from gsgan_core.errors import ConfigError

BACKGROUNDS = ("random", "white", "black")


@dataclass
class TrainConfig:
    # --- where
    data: str = ""  # EG3D dataset: folder or .zip with dataset.json
    outdir: str = ""  # snapshots, training state and the log go here
    resume: str = ""  # a training-state .safetensors (or a run folder holding one) to continue from
    resume_new_d: bool = False  # with --resume: keep G, G_ema, G's optimiser and the progress, start a new discriminator (its --d-* flags may differ: a bigger D for a trained G)
    resume_modulate: bool = False  # with --resume: --g-modulated may w-modulate levels the state's G has plain; they start as exact copies of the plain blocks (w-weights 0), their new weights with fresh Adam moments
    init_g: str = ""  # a generator checkpoint (.safetensors, e.g. a released one) to fine-tune instead of starting from random weights: G and G_ema start as its weights, D and both optimisers start fresh, kimg counts on from the file's; its generator must be the one the G flags build (--d-warmup-kimg lets the new D learn first)

    # --- model
    preset: str = "ffhq256"  # generator preset: ffhq256 | ffhq512 | afhq256 | afhq512 | gsgan-tiny (the official GSGAN network), lite256 | lite512 | heads128 | tiny (the lite one)
    resolution: int = 0  # training image size; 0 = the dataset's (images are resized if different)
    g_pose_cond: bool = True  # GSGAN: mapping sees the camera label (CGS-GAN: False)
    g_background: bool = True  # GSGAN's background Gaussians (CGS-GAN: False, random colour instead)
    g_soft_clamp: bool = False  # CGS-GAN's 20 tanh(0.05 v) on head outputs
    g_anchor_floor_pixels: float = 0.0  # > 0: anchors' scales stay above this many pixels (0 = GSGAN)
    g_view_dependent_color: bool = True  # GSGAN: render colour sees the view direction (CGS-GAN: False)
    g_modulated: str = ""  # which levels' blocks are w-modulated, one 0 or 1 per level (e.g. 1,1,1,1,1); empty = the preset's (GSGAN: levels 0-2)
    d_pose: str = "contrastive"  # contrastive (GSGAN) | projection (EG3D, CGS-GAN) | none
    d_channel_base: int = 32768  # D channels at resolution r: min(base / r, max)
    d_channel_max: int = 512  # see d_channel_base
    d_mbstd_group: int = 4  # minibatch-std group size

    # --- optimisation
    batch: int = 32  # total over all processes; each process takes batch / world_size
    kimg: float = 15000  # length of training in thousands of real images shown
    g_lr: float = 0.0025  # Adam learning rate of G
    d_lr: float = 0.002  # Adam learning rate of D (scaled by r1_interval / (r1_interval + 1), lazy R1)
    adam_beta1: float = 0.0  # Adam betas (0, 0.99) as in StyleGAN2
    adam_beta2: float = 0.99  # see adam_beta1
    g_clip: float = 20.0  # gradient-norm clipping (0 = off)
    d_clip: float = 5.0  # gradient-norm clipping of D (0 = off)
    ema_kimg: float = 10.0  # G_ema half-life in kimg
    ema_rampup: float = 0.05  # half-life is at most this fraction of images seen so far (0 = off)
    d_warmup_kimg: float = 0.0  # G stays still for this many kimg after its discriminator starts (a new run, or --resume-new-d), so that a new D learns before it steers a trained G

    # --- losses
    r1_gamma: float = 1.0  # R1 weight gamma: loss + gamma / 2 * ||grad D(real)||^2
    r1_interval: int = 16  # lazy R1: every this many D steps, scaled up by the interval (0 = off)
    pose_weight: float = 1.0  # InfoNCE weight in G's loss and in D's loss on reals
    pose_temperature: float = 0.1  # InfoNCE temperature (cosine similarities)
    lambda_center: float = 1.0  # ||mean of level-0 anchors||^2 / 3 (faces 1, cats 10)
    lambda_knn: float = 10.0  # mean squared distance to the knn_k nearest level-0 anchors (CGS-GAN 20)
    knn_k: int = 64  # neighbours of the kNN regulariser
    c_swap_prob: float = 0.5  # pose-conditioned mapping: final probability of a camera other than the render's
    c_swap_fade_kimg: float = 1000.0  # the swap probability fades from 1 to c_swap_prob over this many kimg (EG3D)
    views: int = 1  # CGS-GAN multi-view: render each generated scene from this many cameras (4)
    blur_sigma: float = 10.0  # D-input blur at the start, in pixels at 256 (scaled with resolution)
    blur_fade_kimg: float = 200.0  # the blur fades to 0 over this many kimg
    background: str = "random"  # colour behind real RGBA images and behind rendered fakes
    xflip: bool = False  # add mirrored images with mirrored cameras

    # --- bookkeeping
    seed: int = 0  # initial weights, data order and every random draw of training
    snap_kimg: float = 50.0  # snapshot (grid PNG, checkpoint, training state) every this many kimg
    log_steps: int = 20  # one JSONL line of averaged scalars every this many steps
    grid_seeds: int = 8  # snapshot grid: this many fixed seeds...
    grid_yaws: str = "-0.5,0,0.5"  # ...each from these fixed yaws (radians)
    swd_images: int = 0  # > 0: sliced Wasserstein distance on this many images at each snapshot
    level_images: int = 4  # > 0: each level's share of this many images at each snapshot (dead levels)
    workers: int = 2  # data-loading processes per training process
    device: str = "auto"  # auto | cpu | cuda
    render_backend: str = "auto"  # auto | gsplat | reference
    render_supersample: int = 1  # render fakes at this many times the resolution and average down (box filter, like the heads dataset's 2x2); saved in checkpoints, which gsgan-metrics honours
    tf32: bool = True  # CUDA: TF32 tensor cores for matmuls and convolutions (GAN training tolerates it)
    max_steps: int = 0  # stop after this many steps even before kimg (tests, benchmarks; 0 = off)
    max_minutes: float = 0.0  # stop with a final snapshot after this many minutes of this run (job time limits; 0 = off)
    state_precision: str = "float32"  # training state's Adam moments and G_ema: float32 (exact resume) | bfloat16 (40% smaller)

    def __post_init__(self):
        if self.d_pose not in ("contrastive", "projection", "none"):
            raise ConfigError(f"--d-pose must be contrastive, projection or none, got {self.d_pose!r}")
        if self.background not in BACKGROUNDS:
            raise ConfigError(f"--background must be one of {BACKGROUNDS}, got {self.background!r}")
        if self.batch < 1 or self.views < 1 or self.kimg <= 0:
            raise ConfigError("--batch and --views must be >= 1 and --kimg > 0")
        if self.state_precision not in ("float32", "bfloat16"):
            raise ConfigError(f"--state-precision must be float32 or bfloat16, got {self.state_precision!r}")
        if self.render_supersample < 1:
            raise ConfigError(f"--render-supersample must be >= 1, got {self.render_supersample}")
        if self.swd_images < 0 or self.level_images < 0:
            raise ConfigError("--swd-images and --level-images must be >= 0 (0 = off)")
        if self.max_steps < 0 or self.max_minutes < 0:
            raise ConfigError("--max-steps and --max-minutes must be >= 0 (0 = no limit)")
        if self.resume_new_d and not self.resume:
            raise ConfigError("--resume-new-d keeps the generator of a --resume state: pass --resume too")
        if self.init_g and self.resume:
            raise ConfigError("--init-g starts a run from a generator checkpoint and --resume continues a run: pass one of them")
        if self.resume_modulate and not self.resume:
            raise ConfigError("--resume-modulate widens the generator of a --resume state: pass --resume too")
        if self.g_modulated and any(v not in ("0", "1") for v in self.g_modulated.split(",")):
            raise ConfigError(f"--g-modulated takes one 0 or 1 per level, comma-separated (e.g. 1,1,1,0,0), got {self.g_modulated!r}")
        if self.d_warmup_kimg < 0:
            raise ConfigError(f"--d-warmup-kimg must be >= 0, got {self.d_warmup_kimg}")
        if self.r1_interval < 0 or self.log_steps < 1 or self.snap_kimg < 0.001:
            raise ConfigError("--r1-interval must be >= 0, --log-steps >= 1 and --snap-kimg >= 0.001 (one image)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Fields that shape the networks or their inputs: a resumed run must keep them (the D ones may
# change with --resume-new-d, which starts a new discriminator; g_modulated may add levels with
# --resume-modulate).
G_FIELDS = (
    "preset", "resolution", "g_pose_cond", "g_background", "g_soft_clamp", "g_anchor_floor_pixels",
    "g_view_dependent_color", "g_modulated",
)
D_FIELDS = ("d_pose", "d_channel_base", "d_channel_max", "d_mbstd_group")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _field_comments() -> dict[str, str]:
    """The `# comment` beside each TrainConfig field: the one place a flag is documented."""
    import inspect
    import re

    comments = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        match = re.match(r"\s+(\w+): \w+ = .*?  # (.*)$", line)
        if match:
            comments[match.group(1)] = match.group(2)
    return comments


def build_parser(prog: str = "gsgan-train") -> argparse.ArgumentParser:
    """One --flag per TrainConfig field, typed and defaulted from the dataclass, helped by its comment."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a hierarchical Gaussian-splat GAN. Multi-GPU: "
        "torchrun --nproc_per_node N -m gsgan_core.train ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    comments = _field_comments()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = {"bool": _parse_bool, "int": int, "float": float, "str": str}[field.type]
        help_text = comments.get(field.name, "").replace("%", "%%")
        parser.add_argument(flag, type=kind, default=field.default, metavar=field.type.upper(), help=help_text)
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    config = TrainConfig(**vars(args))
    if not config.data and not config.resume:
        raise ConfigError("--data is required (an EG3D dataset folder or .zip)")
    if not config.outdir and config.resume:  # continue in the run folder the state came from
        resume = Path(config.resume)
        config.outdir = str(resume if resume.is_dir() else resume.parent)
    if not config.outdir:
        raise ConfigError("--outdir is required")
    return config
