"""Every training setting in one dataclass; defaults are the reference's (model doc, section 5).

Each field is one `gsgan-train --field-name` flag (`build_parser`), documented by the comment beside
it and checked by the limits in its definition (`__post_init__`): nothing about a setting is
written anywhere else. Field metadata says what a setting is:

    model="G", "D"    it shapes that network (--preset and --resolution: both); train/architecture.py
                      maps it onto the network's config, the one place that does: --g-NAME and
                      --d-NAME set field NAME. Their default is None: the preset's value, so a
                      network's settings live in its config and its presets alone
    fixed="why"       a resumed run keeps the run's value (besides the model flags)
    per_command       it belongs to this command alone and is not inherited on --resume

A resumed run takes every other setting from the run (see `given`) unless this command gives it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from gsgan_core.errors import ConfigError
from gsgan_core.models.config import PRESETS
from gsgan_core.models.discriminator import POSE_MODES

BACKGROUNDS = ("random", "white", "black")


def _s(default, *, low=None, above=None, high=None, below=None, choices=None, model=None, fixed=None,
       per_command=False):
    """A setting: its default, its limits (low <= v, above < v, v <= high, v < below) and its kind."""
    meta = dict(low=low, above=above, high=high, below=below, choices=choices, model=model, fixed=fixed,
                per_command=per_command)
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None and v is not False})


@dataclass
class TrainConfig:
    # --- where
    data: str = ""  # EG3D dataset: folder or .zip with dataset.json (a resumed run may name the same data at a new path)
    outdir: str = ""  # snapshots, training state and the log go here (with --resume: the run's folder)
    resume: str = _s("", per_command=True)  # a run folder (or its training-state .safetensors) to continue: every setting is the run's unless given here
    resume_new_d: bool = _s(False, per_command=True)  # with --resume: keep G, G_ema, G's optimiser and the progress, start a new discriminator (its --d-* flags may differ: a bigger D for a trained G)
    resume_modulate: bool = _s(False, per_command=True)  # with --resume: --g-modulated may w-modulate levels the state's G has plain; they start as exact copies of the plain blocks (w-weights 0), their new weights with fresh Adam moments
    init_g: str = _s("", per_command=True)  # a generator checkpoint (.safetensors or official .pkl) to fine-tune: its architecture and weights become G and G_ema, D and both optimisers start fresh, kimg counts on from the file's (--d-warmup-kimg lets the new D learn first)

    # --- model (taken from the file with --resume and --init-g; given there, they must agree with it)
    preset: str = _s("ffhq256", choices=tuple(PRESETS), model="GD")  # both networks: ffhq256 | ffhq512 | afhq256 | afhq512 | gsgan-tiny (the official GSGAN generator), lite256 | lite512 | heads128 | tiny (the lite one)
    resolution: int = _s(0, low=0, model="GD")  # training image size; 0 = the dataset's (images are resized if different)
    g_pose_cond: bool = _s(None, model="G")  # the mapping sees the camera label (GSGAN: true; CGS-GAN: false); default: the preset's
    g_background: bool = _s(None, model="G")  # lite: GSGAN's background Gaussians (CGS-GAN: false, random colour instead); default: the preset's
    g_soft_clamp: bool = _s(None, model="G")  # lite: CGS-GAN's 20 tanh(0.05 v) on head outputs; default: the preset's
    g_anchor_floor_pixels: float = _s(None, low=0, model="G")  # lite: > 0: anchors' scales stay above this many pixels (0 = GSGAN); default: the preset's
    g_view_dependent_color: bool = _s(None, model="G")  # lite: render colour sees the view direction (GSGAN: true; CGS-GAN: false); default: the preset's
    g_modulated: str = _s(None, model="G")  # lite: which levels' blocks are w-modulated, one 0 or 1 per level (e.g. 1,1,1,1,1); default: the preset's
    d_pose: str = _s(None, choices=POSE_MODES, model="D")  # contrastive (GSGAN) | projection (EG3D, CGS-GAN) | none; default: the preset's
    d_channel_base: int = _s(None, low=0, model="D")  # D channels at resolution r: min(base / r, max); default (or 0): the preset's (32768; tiny presets 1024)
    d_channel_max: int = _s(None, low=0, model="D")  # see d_channel_base; default (or 0): the preset's (512; tiny presets 64)
    d_mbstd_group: int = _s(None, low=1, model="D")  # minibatch-std group size; default: the preset's (4)

    # --- optimisation
    batch: int = _s(32, low=1, fixed="its data order and its progress count in batches of the run's size")  # total over all processes; each process takes batch / world_size
    kimg: float = _s(15000.0, above=0)  # length of training in thousands of real images shown
    g_lr: float = _s(0.0025, above=0)  # Adam learning rate of G
    d_lr: float = _s(0.002, above=0)  # Adam learning rate of D (scaled by r1_interval / (r1_interval + 1), lazy R1)
    adam_beta1: float = _s(0.0, low=0, below=1)  # Adam betas (0, 0.99) as in StyleGAN2
    adam_beta2: float = _s(0.99, low=0, below=1)  # see adam_beta1
    g_clip: float = _s(20.0, low=0)  # gradient-norm clipping (0 = off)
    d_clip: float = _s(5.0, low=0)  # gradient-norm clipping of D (0 = off)
    ema_kimg: float = _s(10.0, low=0)  # G_ema half-life in kimg
    ema_rampup: float = _s(0.05, low=0)  # half-life is at most this fraction of images seen so far (0 = off)
    d_warmup_kimg: float = _s(0.0, low=0)  # G stays still for this many kimg after its discriminator starts (a new run, --init-g or --resume-new-d), so that a new D learns before it steers a trained G

    # --- losses
    r1_gamma: float = _s(1.0, low=0)  # R1 weight gamma: loss + gamma / 2 * ||grad D(real)||^2
    r1_interval: int = _s(16, low=0)  # lazy R1: every this many D steps, scaled up by the interval (0 = off)
    pose_weight: float = _s(1.0, low=0)  # InfoNCE weight in G's loss and in D's loss on reals
    pose_temperature: float = _s(0.1, above=0)  # InfoNCE temperature (cosine similarities)
    lambda_center: float = _s(1.0, low=0)  # ||mean of level-0 anchors||^2 / 3 (faces 1, cats 10)
    lambda_knn: float = _s(10.0, low=0)  # mean squared distance to the knn_k nearest level-0 anchors (CGS-GAN 20)
    knn_k: int = _s(64, low=1)  # neighbours of the kNN regulariser
    c_swap_prob: float = _s(0.5, low=0, high=1)  # pose-conditioned mapping: final probability of a camera other than the render's
    c_swap_fade_kimg: float = _s(1000.0, low=0)  # the swap probability fades from 1 to c_swap_prob over this many kimg (EG3D)
    views: int = _s(1, low=1)  # CGS-GAN multi-view: render each generated scene from this many cameras (4)
    blur_sigma: float = _s(10.0, low=0)  # D-input blur at the start, in pixels at 256 (scaled with resolution)
    blur_fade_kimg: float = _s(200.0, low=0)  # the blur fades to 0 over this many kimg
    background: str = _s("random", choices=BACKGROUNDS)  # colour behind real RGBA images and behind rendered fakes
    xflip: bool = False  # add mirrored images with mirrored cameras

    # --- bookkeeping
    seed: int = _s(0, low=0)  # initial weights, data order and every random draw of training
    snap_kimg: float = _s(50.0, low=0.001)  # snapshot (grid PNG, checkpoint, training state) every this many kimg
    log_steps: int = _s(20, low=1)  # one JSONL line of averaged scalars every this many steps (and at steps 1, 2, 4, 8, ... before)
    grid_seeds: int = _s(8, low=1)  # snapshot grid: this many fixed seeds...
    grid_yaws: str = "-0.5,0,0.5"  # ...each from these fixed yaws (radians)
    swd_images: int = _s(0, low=0)  # > 0: sliced Wasserstein distance on this many images at each snapshot
    level_images: int = _s(4, low=0)  # > 0: each level's share of this many images at each snapshot (dead levels)
    workers: int = _s(2, low=0)  # data-loading processes per training process
    device: str = _s("auto", choices=("auto", "cpu", "cuda"))  # auto | cpu | cuda
    render_backend: str = _s("auto", choices=("auto", "gsplat", "reference"))  # auto | gsplat | reference
    render_supersample: int = _s(1, low=1)  # render fakes at this many times the resolution and average down (box filter, like the heads dataset's 2x2); saved in checkpoints, which gsgan-metrics honours
    tf32: bool = True  # CUDA: TF32 tensor cores for matmuls and convolutions (GAN training tolerates it)
    max_steps: int = _s(0, low=0)  # stop after this many steps of this command even before kimg (tests, benchmarks; 0 = off)
    max_minutes: float = _s(0.0, low=0)  # stop with a final snapshot after this many minutes of this command (job time limits; 0 = off)
    state_precision: str = _s("float32", choices=("float32", "bfloat16"))  # training state's Adam moments and G_ema: float32 (exact resume) | bfloat16 (40% smaller)

    # Not a flag: the settings this command gave (gsgan-train: the flags on its command line). A resumed
    # run takes every other setting from the run. None: the fields that differ from their defaults.
    given: frozenset[str] | None = field(default=None, repr=False, compare=False, metadata={"flag": False})

    def __post_init__(self):
        if self.g_modulated == "":  # "" and 0 also say "the preset's" (how older runs saved it)
            self.g_modulated = None
        for name in ("d_channel_base", "d_channel_max"):
            if getattr(self, name) == 0:
                setattr(self, name, None)
        for f in flag_fields():
            check_value(f, getattr(self, f.name))
        if self.resume and not self.outdir:  # continue in the run folder the state came from
            resume = Path(self.resume)
            self.outdir = str(resume if resume.is_dir() else resume.parent)
        for flag, needs in (("resume_new_d", "keeps the generator of"), ("resume_modulate", "widens the generator of")):
            if getattr(self, flag) and not self.resume:
                raise ConfigError(f"--{_dash(flag)} {needs} a --resume state: pass --resume too")
        if self.init_g and self.resume:
            raise ConfigError("--init-g starts a run from a generator checkpoint and --resume continues a run: pass one of them")
        if self.g_modulated is not None and any(v not in ("0", "1") for v in self.g_modulated.split(",")):
            raise ConfigError(f"--g-modulated takes one 0 or 1 per level, comma-separated (e.g. 1,1,1,0,0), got {self.g_modulated!r}")
        if self.resolution and (self.resolution < 8 or self.resolution & (self.resolution - 1)):
            raise ConfigError(f"--resolution must be a power of two >= 8 (the discriminator halves it down to 4x4), got {self.resolution}")
        try:
            yaws = [float(y) for y in self.grid_yaws.split(",")]
        except ValueError:
            yaws = [math.nan]
        if not all(math.isfinite(y) for y in yaws):
            raise ConfigError(f"--grid-yaws takes comma-separated angles in radians (e.g. -0.5,0,0.5), got {self.grid_yaws!r}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in flag_fields()}

    def given_fields(self) -> frozenset[str]:
        if self.given is not None:
            return self.given
        return frozenset(f.name for f in flag_fields() if getattr(self, f.name) != f.default)


def flag_fields(**metadata) -> list[dataclasses.Field]:
    """TrainConfig's settings (every field but `given`), those whose metadata has `metadata`'s values."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag", True)
            and all(f.metadata.get(k) == v for k, v in metadata.items())]


def _dash(name: str) -> str:
    return name.replace("_", "-")


def check_value(f: dataclasses.Field, value) -> None:
    """ConfigError naming the flag if `value` is outside field `f`'s limits (or not a finite number)."""
    meta, flag = f.metadata, f"--{_dash(f.name)}"
    if value is None and f.default is None:  # the preset's
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{flag} must be one of {', '.join(meta['choices'])}; got {value!r}")
    if f.type not in ("int", "float"):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value!r}")
    limits = [("low", ">=", value >= meta.get("low", -math.inf)), ("above", ">", value > meta.get("above", -math.inf)),
              ("high", "<=", value <= meta.get("high", math.inf)), ("below", "<", value < meta.get("below", math.inf))]
    wanted = [f"{sign} {meta[key]}" for key, sign, _ in limits if key in meta]
    if not all(ok for _, _, ok in limits):
        raise ConfigError(f"{flag} must be {' and '.join(wanted)}, got {value!r}")


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


def build_parser(prog: str = "gsgan-train", defaults: bool = True) -> argparse.ArgumentParser:
    """One --flag per TrainConfig setting, typed and defaulted from the dataclass, helped by its comment.

    defaults=False: flags not on the command line are left out of the result (which were given)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a hierarchical Gaussian-splat GAN. Multi-GPU: "
        "torchrun --nproc_per_node N -m gsgan_core.train ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=None if defaults else argparse.SUPPRESS,
    )
    comments = _field_comments()
    for f in flag_fields():
        kind = {"bool": _parse_bool, "int": int, "float": float, "str": str}[f.type]
        help_text = comments.get(f.name, "").replace("%", "%%")
        default = f.default if defaults and f.default is not None else argparse.SUPPRESS  # None: the preset's
        parser.add_argument("--" + _dash(f.name), type=kind, default=default, metavar=f.type.upper(), help=help_text)
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The command line as a TrainConfig that knows which flags were given; ConfigError for a bad value."""
    args = vars(build_parser().parse_args(argv))
    given = frozenset(vars(build_parser(defaults=False).parse_args(argv)))
    config = TrainConfig(**args, given=given)
    if not config.data and not config.resume:
        raise ConfigError("--data is required (an EG3D dataset folder or .zip)")
    if not config.outdir:
        raise ConfigError("--outdir is required")
    return config
