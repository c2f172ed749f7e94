"""Official GSGAN snapshots (`network-snapshot-*.pkl`) as gsgan generators, without running them.

`io/snapshot.py` reads the pickle into inert data (nothing in it executes). Here the generator's
constructor arguments become a `GSGANConfig` and its weights a `GSGANGenerator`:

- the configuration comes from the init kwargs the snapshot recorded (train.py's G_kwargs); the
  widths and depths the official code hard-codes are read from the weights' shapes and checked;
- a key this importer does not know, or a value it cannot reproduce, is refused with the field named;
- G_ema (the averaged generator, the one to look at) by default, or G; the discriminator is not imported.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gsgan_core.cameras import FFHQ_FOV_DEG, FFHQ_PIVOT, OrbitPose
from gsgan_core.errors import CheckpointError, ConfigError
from gsgan_core.io.checkpoint import CheckpointInfo, save_checkpoint
from gsgan_core.io.snapshot import read_snapshot
from gsgan_core.models.gsgan import GSGANConfig, GSGANGenerator

GENERATOR_CLASS = "GSGenerator"
WHICH = ("G_ema", "G")

# Init kwargs of the official GSGenerator and what this importer does with them.
_TOP_KEYS = {
    "z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "rendering_kwargs",
    # StyleGAN backbone settings that train.py passes and GSGenerator ignores:
    "sr_num_fp16_res", "sr_kwargs", "channel_base", "channel_max", "fused_modconv_default", "num_fp16_res",
    "conv_clamp",
}
_RENDERING_KEYS = {
    "custom_options", "c_gen_conditioning_zero", "c_scale", "avg_camera_radius", "avg_camera_pivot",
    # Used by the official renderer or loss only (depth range, triplane leftovers), not by the generator:
    "image_resolution", "disparity_space_sampling", "clamp_mode", "gpc_reg_prob", "ray_start", "ray_end",
    "box_warp", "white_back",
}
_CUSTOM_KEYS = {
    "scale_init", "scale_threshold", "scale_end", "scale_init_bg", "scale_threshold_bg", "xyz_output_scale",
    "res_end", "up_ratio", "num_pts", "use_start_pe", "output_multiplier", "use_dir_cond",
    # Read by the official code but without effect on what it generates:
    "scale_upsample_reg", "rgb_resolution", "camera_noise_std",
}
# Tensors that do not take part in generating: the official 1x1 convolutions' resampling filters
# (unused at kernel size 1) and the dataset's label spread, which the training loop attaches to G.
_IGNORED_TENSORS = re.compile(r"(.*\.resample_filter|dataset_label_std)$")


def config_from_official(init_kwargs: dict[str, Any], state_dict: dict[str, Tensor]) -> GSGANConfig:
    """The GSGANConfig of an official GSGenerator (ConfigError naming the field it cannot take)."""
    def unknown(where: str, data: dict, known: set) -> None:
        extra = sorted(set(data) - known)
        if extra:
            raise ConfigError(f"{where} has {', '.join(map(repr, extra))}, which this importer does not know")

    unknown("the generator's init kwargs", init_kwargs, _TOP_KEYS)
    rendering = _dict(init_kwargs, "rendering_kwargs")
    unknown("rendering_kwargs", rendering, _RENDERING_KEYS)
    options = _dict(rendering, "custom_options", "rendering_kwargs.custom_options")
    unknown("rendering_kwargs.custom_options", options, _CUSTOM_KEYS)
    mapping = _dict(init_kwargs, "mapping_kwargs") if "mapping_kwargs" in init_kwargs else {}
    unknown("mapping_kwargs", mapping, {"num_layers"})

    def require(where: str, value: Any, expected: Any) -> None:
        if value != expected:
            raise ConfigError(f"{where} is {value!r}; gsgan reproduces only {expected!r}")

    require("img_channels", init_kwargs.get("img_channels", 3), 3)
    require("custom_options.output_multiplier", options.get("output_multiplier", 1), 1)
    require("custom_options.use_dir_cond", bool(options.get("use_dir_cond", True)), True)
    require("custom_options.up_ratio", options.get("up_ratio", 4), 4)

    res_end = int(_number(options, "res_end", "custom_options"))
    levels = round(math.log2(res_end / 4))
    if levels < 2 or 4 * 2**levels != res_end:
        raise ConfigError(f"custom_options.res_end is {res_end}; it must be 4 * 2^levels with at least 2 levels")
    scale_end = _number(options, "scale_end", "custom_options")
    resolution = round(math.exp(-scale_end))
    if abs(math.log(1 / resolution) - scale_end) > 1e-6:
        raise ConfigError(f"custom_options.scale_end is {scale_end}, not log(1 / resolution) for any resolution")

    shapes = {name: tuple(t.shape) for name, t in state_dict.items()}

    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise ConfigError(f"the weights have no tensor {name!r}")
        return shapes[name]

    num_points = shape("_xyz")[0]
    if "num_pts" in options and int(options["num_pts"]) != num_points:
        raise ConfigError(f"custom_options.num_pts is {options['num_pts']} but _xyz holds {num_points} points")
    channels = tuple(shape(f"point_gen.out_layers.xyz.block_{4 * 2**level}.0.weight")[1] for level in range(levels))
    if f"point_gen.out_layers.xyz.block_{4 * 2**levels}.0.weight" in shapes:
        raise ConfigError(f"the weights have more levels than custom_options.res_end={res_end} gives ({levels})")
    block0 = "point_gen.blocks.block_4.0.resblocks."
    layers = len({name[len(block0):].split(".")[0] for name in shapes if name.startswith(block0)})
    start_pe = bool(options.get("use_start_pe", True))
    pe_res = shape("point_gen.conv_in.const_pe.const_pe")[3] if start_pe else 512
    z_dim, w_dim, c_dim = (int(_number(init_kwargs, key, "init kwargs")) for key in ("z_dim", "w_dim", "c_dim"))
    return GSGANConfig(
            z_dim=z_dim, w_dim=w_dim, c_dim=c_dim,
            c_scale=float(rendering.get("c_scale", 0.0)),  # the official mapping multiplies by c_scale, default 0
            c_zero=bool(rendering.get("c_gen_conditioning_zero", False)),
            mapping_layers=int(mapping.get("num_layers", 8)),
            num_points=num_points, channels=channels, transformer_layers=layers,
            start_pe=start_pe, pe_res=pe_res,
            view_embed_dim=shape("point_gen.encoder_camera_cond.weight")[0],
            image_resolution=resolution,
            scale_init=_number(options, "scale_init", "custom_options"),
            scale_threshold=_number(options, "scale_threshold", "custom_options"),
            xyz_output_scale=_number(options, "xyz_output_scale", "custom_options"),
            fp16_from_level=max(1, levels - 4),
            background_points=shape("_xyz_bg")[0],
            background_channels=shape("point_gen_bg.conv_in.ffm.linear.weight")[0],
            background_scale_init=_number(options, "scale_init_bg", "custom_options"),
        background_scale_threshold=_number(options, "scale_threshold_bg", "custom_options"),
    )


def default_pose_from_official(init_kwargs: dict[str, Any]) -> OrbitPose:
    """The viewer's default camera: the official visualiser's orbit radius and pivot (FFHQ (0, 0, 0.2),
    AFHQ (0, 0, -0.06)) and EG3D's label field of view, which the mapping is conditioned on (the
    'gsgan' camera model renders with its own fixed field of view whatever the label says)."""
    rendering = _dict(init_kwargs, "rendering_kwargs")
    pivot = rendering.get("avg_camera_pivot", FFHQ_PIVOT)
    try:
        return OrbitPose(radius=rendering.get("avg_camera_radius", 2.7), pivot=tuple(pivot), fov_deg=FFHQ_FOV_DEG)
    except (TypeError, ValueError) as err:  # CameraError is a ValueError
        raise ConfigError(f"rendering_kwargs.avg_camera_pivot / avg_camera_radius: {err}") from None


def _dict(data: dict, key: str, where: str | None = None) -> dict:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"{where or key} must be a dict, got {type(value).__name__}")
    return value


def _number(data: dict, key: str, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}.{key} must be a finite number, got {value!r}")
    return float(value)


def generator_from_official(init_kwargs: dict[str, Any], state_dict: dict[str, Tensor]) -> tuple[GSGANGenerator, OrbitPose]:
    """An official GSGenerator's init kwargs and weights as a GSGANGenerator (eval, float32, CPU)."""
    config = config_from_official(init_kwargs, state_dict)
    pose = default_pose_from_official(init_kwargs)
    generator = GSGANGenerator(config)
    expected = generator.state_dict()
    given = {k: v for k, v in state_dict.items() if not _IGNORED_TENSORS.match(k)}
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"the weights do not fit the official architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, value in expected.items():
        if tuple(given[name].shape) != tuple(value.shape):
            raise ConfigError(f"tensor {name!r} has shape {list(given[name].shape)}, the architecture needs {list(value.shape)}")
        if given[name].is_floating_point() and not torch.isfinite(given[name]).all():
            raise ConfigError(f"tensor {name!r} holds non-finite values")
    generator.load_state_dict({k: v.to(expected[k].dtype) for k, v in given.items()})
    return generator.eval().requires_grad_(False), pose


def load_official_snapshot(
    path: str | os.PathLike, which: str = "G_ema", device: torch.device | str = "cpu"
) -> tuple[GSGANGenerator, CheckpointInfo]:
    """Reads an official snapshot safely and returns its generator, like load_checkpoint does for gsgan files."""
    path = Path(path)
    if which not in WHICH:
        raise ConfigError(f"which must be one of {WHICH}, got {which!r}")
    snapshot = read_snapshot(path)
    record = snapshot.networks.get(which)
    if record is None:
        raise CheckpointError(path, f"has no {which} network (it holds {sorted(snapshot.networks) or 'none'})")
    if record.class_name != GENERATOR_CLASS:
        raise CheckpointError(path, f"{which} is a {record.class_name}, not GSGAN's {GENERATOR_CLASS}")
    try:
        generator, pose = generator_from_official(record.init_kwargs, record.state_dict)
    except ConfigError as err:
        raise CheckpointError(path, f"{which}: {err}") from None
    kwargs = snapshot.training_set_kwargs
    name = Path(str(kwargs.get("path", ""))).stem
    info = CheckpointInfo(
        path=str(path),
        config=generator.config,
        training={"imported_from": path.name, "network": which, "module_sha256": record.module_sha256},
        dataset={"name": name, "resolution": int(kwargs.get("resolution", generator.config.image_resolution))},
        camera=pose,
    )
    return generator.to(device), info


def import_snapshot(path: str | os.PathLike, out: str | os.PathLike, which: str = "G_ema") -> CheckpointInfo:
    """Writes an official snapshot's generator as a gsgan checkpoint (.safetensors, float32)."""
    generator, info = load_official_snapshot(path, which)
    save_checkpoint(out, generator, training=info.training, dataset=info.dataset, camera=info.camera)
    return info


def import_command(argv: list[str] | None = None) -> int:
    """`gsgan-import SNAPSHOT.pkl OUT.safetensors [--which G_ema|G]` (errors: see gsgan_core.cli.console)."""
    import argparse

    from gsgan_core.io.atomic import writing

    parser = argparse.ArgumentParser(
        prog="gsgan-import",
        description="Convert an official GSGAN snapshot (.pkl) to a gsgan checkpoint, without running anything in it.")
    parser.add_argument("snapshot", help="official network-snapshot-*.pkl")
    parser.add_argument("out", help="output .safetensors")
    parser.add_argument("--which", default="G_ema", choices=WHICH, help="the averaged generator (default) or the raw one")
    args = parser.parse_args(argv)
    if not args.out.endswith(".safetensors"):
        parser.error(f"{args.out}: the output must be a .safetensors file")
    with writing(args.out):
        info = import_snapshot(args.snapshot, args.out, args.which)
    config = info.config
    print(f"gsgan-import: wrote {args.out}: {args.which} of {Path(args.snapshot).name}, {config.num_levels} levels, "
          f"{config.num_gaussians:,} Gaussians, {config.image_resolution} px, camera model '{config.camera_model}'")
    return 0
