"""A training run's parts, set up in one of three ways: `setup_run(config) -> Run`.

    fresh     the networks --preset and the model flags describe, at the data's resolution
    --resume  the run's saved settings (this command's flags on top, where they may change), its
              networks as the training state describes them, their weights, optimisers and progress
    --init-g  the generator file's architecture and weights as G and G_ema, a new D, fresh optimisers,
              kimg counting on from the file's

Everything is read and checked before anything is written; then the temporary files of writes an
earlier process of this run left unfinished are removed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from gsgan_core.data.dataset import ImageDataset
from gsgan_core.errors import TrainingError
from gsgan_core.io.open import load_generator
from gsgan_core.models import build_generator
from gsgan_core.models.config import AnyConfig, config_from_dict
from gsgan_core.models.discriminator import DiscriminatorConfig, build_discriminator
from gsgan_core.train.architecture import (
    check_given_flags,
    fresh_configs,
    fresh_discriminator,
    matching_preset,
    model_flags,
    widened_generator,
)
from gsgan_core.train.config import TrainConfig, flag_fields
from gsgan_core.train.data import dataset_identity, open_dataset
from gsgan_core.train.distributed import Dist, init_distributed
from gsgan_core.train.state import (
    STATE_FILE,
    load_into,
    modulate_training_state,
    read_training_state,
    remove_interrupted_writes,
)


@dataclass
class Progress:
    step: int = 0
    nimg: int = 0  # real images shown so far, over all processes
    d_start_nimg: int = 0  # when the discriminator started: G stays still for --d-warmup-kimg after it

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Run:
    config: TrainConfig  # every setting of the run (a resumed run's saved ones with this command's on top)
    world: Dist
    dataset: ImageDataset
    labels: Tensor  # [N, 25] the dataset's cameras, on the device: fakes are rendered from them
    g_config: AnyConfig
    d_config: DiscriminatorConfig
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    progress: Progress = field(default_factory=Progress)
    kept: str | None = None  # what a failure leaves to go back to, in words (None: nothing yet)

    @property
    def device(self) -> torch.device:
        return self.world.device

    @property
    def resolution(self) -> int:
        return self.g_config.image_resolution

    @property
    def outdir(self) -> Path:
        return Path(self.config.outdir)

    @property
    def batch_per_process(self) -> int:
        return self.config.batch // self.world.world_size

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D}

    def g_still(self) -> bool:
        """While a new discriminator warms up (--d-warmup-kimg), G and G_ema stay as they are."""
        return self.progress.nimg - self.progress.d_start_nimg < self.config.d_warmup_kimg * 1000

    def models_record(self) -> dict:
        """The networks' configs as the training state saves them (what --resume builds)."""
        return {"G": {"architecture": self.g_config.architecture, "config": self.g_config.to_dict()},
                "D": self.d_config.to_dict()}


def setup_run(config: TrainConfig) -> Run:
    """A fresh, resumed (config.resume) or fine-tuning (config.init_g) run, ready for its first step."""
    world = init_distributed(config.device)
    if world.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest convolutions
    if config.resume:
        run = _resumed_run(config, world)
    elif config.init_g:
        run = _fine_tuning_run(config, world)
    else:
        if (Path(config.outdir) / STATE_FILE).exists():
            raise TrainingError(f"{config.outdir} already holds a training run; pass --resume {config.outdir} "
                                "or choose another --outdir")
        dataset = open_dataset(config.data, config.xflip, world)
        run = build_run(config, world, dataset, *fresh_configs(config, training_resolution(config, dataset)))
    if world.is_main:
        removed = remove_interrupted_writes(run.outdir)
        if removed:
            print(f"removed {len(removed)} unfinished write(s) of an interrupted process: "
                  f"{', '.join(p.name for p in removed)}", flush=True)
    return run


def training_resolution(config: TrainConfig, dataset: ImageDataset) -> int:
    resolution = config.resolution or dataset.resolution
    if resolution < 8 or resolution & (resolution - 1):
        raise TrainingError(f"training resolution must be a power of two >= 8 (the discriminator halves it down "
                            f"to 4x4), got {resolution}; pass --resolution to resize")
    return resolution


def build_run(config: TrainConfig, world: Dist, dataset: ImageDataset, g_config: AnyConfig,
              d_config: DiscriminatorConfig, g_weights: dict[str, Tensor] | None = None) -> Run:
    """Networks (G_ema a copy of G, which starts from `g_weights` if given) and Adam optimisers."""
    if config.batch % world.world_size:
        raise TrainingError(f"--batch {config.batch} does not divide over {world.world_size} processes")
    torch.manual_seed(config.seed)  # identical initial weights on every process
    G = build_generator(g_config)
    if g_weights is not None:
        G.load_state_dict(g_weights)
    G = G.to(world.device).train()
    D = build_discriminator(d_config).to(world.device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    betas = (config.adam_beta1, config.adam_beta2)
    opt_G = torch.optim.Adam(G.parameters(), lr=config.g_lr, betas=betas, eps=1e-8)
    # Lazy R1 makes each D step 1/interval heavier: StyleGAN2's correction of lr and betas
    ratio = config.r1_interval / (config.r1_interval + 1) if config.r1_interval else 1.0
    opt_D = torch.optim.Adam(D.parameters(), lr=config.d_lr * ratio, betas=tuple(b**ratio for b in betas), eps=1e-8)
    labels = dataset.labels.to(world.device)
    return Run(config=config, world=world, dataset=dataset, labels=labels, g_config=g_config, d_config=d_config,
               G=G, D=D, G_ema=G_ema, opt_G=opt_G, opt_D=opt_D)


# ====================================================================== --init-g
def _fine_tuning_run(config: TrainConfig, world: Dist) -> Run:
    if (Path(config.outdir) / STATE_FILE).exists():
        raise TrainingError(f"{config.outdir} already holds a training run; --init-g starts a new one: "
                            "choose another --outdir")
    G_init, info = load_generator(config.init_g)  # read before the data: a bad file stops at once
    check_given_flags(config, {"G": info.config}, config.init_g)
    if "preset" not in config.given_fields():  # the discriminator of the file's preset, if it is one
        config = dataclasses.replace(config, preset=matching_preset(info.config) or config.preset)
    dataset = open_dataset(config.data, config.xflip, world)
    g_config = info.config
    d_config = fresh_discriminator(config, g_config.image_resolution)
    run = build_run(config, world, dataset, g_config, d_config, g_weights=G_init.state_dict())
    nimg = round(info.kimg * 1000)  # the file's progress goes on: the EMA ramp-up, blur and swap fades are over
    run.progress = Progress(int(info.training.get("step", 0)), nimg, d_start_nimg=nimg)
    return run


# ====================================================================== --resume
def resumed_config(config: TrainConfig, saved: dict, source: str) -> TrainConfig:
    """The run's settings as it saved them, with those this command gave on top. A setting the run's
    gsgan did not have yet is the default it trained with. TrainingError for a fixed one changed."""
    given = config.given_fields()
    values = {f.name: saved[f.name] for f in flag_fields() if f.name in saved and not f.metadata.get("per_command")}
    for f in flag_fields():
        if f.name in given and "fixed" in f.metadata and f.name in saved and getattr(config, f.name) != saved[f.name]:
            raise TrainingError(f"{source}: --{f.name.replace('_', '-')} {getattr(config, f.name)}: a resumed run keeps "
                                f"its {f.name} ({saved[f.name]}): {f.metadata['fixed']}")
    values.update({name: getattr(config, name) for name in given})
    values.update({f.name: getattr(config, f.name) for f in flag_fields() if f.metadata.get("per_command")})
    values["outdir"] = config.outdir  # the resumed folder unless given
    return TrainConfig(**values, given=given)


def _saved_networks(info: dict, dataset: ImageDataset | None) -> dict[str, object] | None:
    """{"G": config, "D": config} of the state's networks. A state from before they were saved
    describes them by its flags and the dataset's resolution (None until the dataset is open)."""
    if "models" in info:
        g = info["models"]["G"]
        return {"G": config_from_dict(g["config"], g["architecture"]),
                "D": DiscriminatorConfig.from_dict(info["models"]["D"])}
    if dataset is None:
        return None
    defaults = TrainConfig().to_dict()
    saved = TrainConfig(**{k: info["config"].get(k, v) for k, v in defaults.items() if k in model_flags("G") + model_flags("D")})
    g_config, d_config = fresh_configs(saved, training_resolution(saved, dataset))
    return {"G": g_config, "D": d_config}


def _check_same_data(saved: dict | None, dataset: ImageDataset, source: str) -> None:
    """The run's dataset, wherever it is now: as many images, of the same size, with the same camera
    labels (what a state does not record is not checked)."""
    now = dataset_identity(dataset)
    labels_differ = "labels_sha256" in (saved or {}) and saved["labels_sha256"] != now["labels_sha256"]
    if saved and ((saved["images"], saved["resolution"]) != (now["images"], now["resolution"]) or labels_differ):
        raise TrainingError(
            f"{source}: --data {dataset.path} is not the run's dataset (the run's {saved['name']}: "
            f"{saved['images']} images at {saved['resolution']} px; this one: {now['images']} at "
            f"{now['resolution']} px{', other camera labels' if labels_differ else ''}): a resumed run goes on "
            "with its own data; --init-g fine-tunes on other data")


def _resumed_run(config: TrainConfig, world: Dist) -> Run:
    tensors, info = read_training_state(config.resume)
    source = info["path"]
    config = resumed_config(config, info["config"], source)
    outdir = Path(config.outdir)
    if (outdir / STATE_FILE).exists() and (outdir / STATE_FILE).resolve() != Path(source).resolve():
        raise TrainingError(f"{outdir} already holds another training run; --resume {source} goes on in its own "
                            "folder or in a new --outdir")
    open_flags = set(model_flags("D")) - {"preset", "resolution"} if config.resume_new_d else set()
    if config.resume_modulate:
        open_flags.add("g_modulated")
    files = _saved_networks(info, None)
    if files is not None:  # a flag that would change a network is refused before the data are read
        check_given_flags(config, files, source, frozenset(open_flags))
    dataset = open_dataset(config.data, config.xflip, world)
    _check_same_data(info.get("dataset"), dataset, source)
    if files is None:
        files = _saved_networks(info, dataset)
        check_given_flags(config, files, source, frozenset(open_flags))
    g_config = files["G"]
    if config.resume_modulate and "g_modulated" in config.given_fields():
        g_config = widened_generator(files["G"], config.g_modulated, source)
        if g_config != files["G"]:  # the saved G, exactly, with more levels w-modulated
            tensors, info = modulate_training_state(tensors, info, files["G"], g_config)
    d_config = fresh_discriminator(config, g_config.image_resolution) if config.resume_new_d else files["D"]
    run = build_run(config, world, dataset, g_config, d_config)
    if config.resume_new_d:  # the new D (and its optimiser) keep their fresh initial state
        load_into(tensors, info, {"G": run.G, "G_ema": run.G_ema}, {"opt_G": run.opt_G})
    else:
        load_into(tensors, info, run.modules, run.optimizers)  # lr and betas stay this run's settings
    saved = info["progress"]
    step, nimg = int(saved["step"]), int(saved["nimg"])
    run.progress = Progress(step, nimg, nimg if config.resume_new_d else int(saved.get("d_start_nimg", 0)))
    run.kept = f"the training state it resumed from (step {step}) is kept: {source}"
    return run
