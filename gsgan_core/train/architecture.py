"""The networks' configs from the model flags: the one place that maps a flag onto a config field.

    --preset P          the generator PRESETS[P] and the discriminator DISCRIMINATOR_PRESETS[P]
    --resolution R      image_resolution (G) and resolution (D); 0 = the dataset's
    --g-pose-cond B     c_dim = 25 or 0 (lite); c_zero = not B (official: it keeps its label input)
    --g-modulated 1,0   modulated as one bool per level; empty = the preset's
    --g-NAME, --d-NAME  field NAME of the generator's, the discriminator's config
A model flag left out (None) is the preset's value: the presets are the one source of a network's settings.

A fresh run builds its networks from the flags (`fresh_configs`). `--resume` and `--init-g` take
them from the file, like nanoGPT's resume; a model flag given there must leave the file's network
as it is (`check_given_flags`), except what --resume-new-d and --resume-modulate open up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gsgan_core.errors import ConfigError, TrainingError
from gsgan_core.models.config import PRESETS, AnyConfig, preset
from gsgan_core.models.discriminator import DiscriminatorConfig, discriminator_preset
from gsgan_core.train.config import TrainConfig, flag_fields

NETWORK_NAMES = {"G": "generator", "D": "discriminator"}
HINTS = {"G": "", "D": "; --resume-new-d true starts a new discriminator, whose --d-* flags may differ"}


def model_flags(network: str) -> list[str]:
    """The flags that shape network "G" or "D" (TrainConfig fields with that model metadata)."""
    return [f.name for f in flag_fields() if network in f.metadata.get("model", "")]


def model_fields(flag: str, value: Any, base: AnyConfig | DiscriminatorConfig) -> dict[str, Any]:
    """{field: value} that model flag `flag` sets in a config of `base`'s kind; {} for 'the preset's'."""
    if flag == "preset" or value is None:
        return {}
    if flag == "resolution":
        name = "resolution" if isinstance(base, DiscriminatorConfig) else "image_resolution"
        return {name: value} if value else {}
    if isinstance(base, DiscriminatorConfig):
        return {flag[len("d_"):]: value}
    if flag == "g_pose_cond":
        return {"c_dim": 25 if value else 0} if base.architecture == "lite" else {"c_zero": not value}
    if flag == "g_modulated":
        return {"modulated": tuple(v == "1" for v in value.split(","))}
    return {flag[len("g_"):]: value}


def apply_flags(base, flags: dict[str, Any], source: str):
    """`base` with the model flags `flags` applied. ConfigError for a switch its architecture lacks
    (`source` names what built `base`) or a combination its config refuses."""
    names = {f.name for f in dataclasses.fields(base)}
    changes = {}
    for flag, value in flags.items():
        for name, new in model_fields(flag, value, base).items():
            if name in names:
                changes[name] = new
            else:  # a switch this architecture does not have (the official network's constants: background, ...)
                raise ConfigError(f"--{flag.replace('_', '-')} applies to the lite architecture; {source} is the "
                                  "official GSGAN network, which has no such switch")
    try:
        return dataclasses.replace(base, **changes)
    except ConfigError as err:
        raise ConfigError(f"{source} with {_flags_text(changes)}: {err}") from None


def _flags_text(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in changes.items()) or "its own settings"


def fresh_generator(config: TrainConfig, resolution: int) -> AnyConfig:
    """The generator that --preset and the G flags describe, for images of `resolution`."""
    flags = {**{name: getattr(config, name) for name in model_flags("G")}, "resolution": resolution}
    return apply_flags(preset(config.preset), flags, f"--preset {config.preset}")


def fresh_discriminator(config: TrainConfig, resolution: int) -> DiscriminatorConfig:
    """The discriminator that --preset and the D flags describe, for images of `resolution`."""
    flags = {**{name: getattr(config, name) for name in model_flags("D")}, "resolution": resolution}
    return apply_flags(discriminator_preset(config.preset), flags, f"--preset {config.preset}")


def fresh_configs(config: TrainConfig, resolution: int) -> tuple[AnyConfig, DiscriminatorConfig]:
    return fresh_generator(config, resolution), fresh_discriminator(config, resolution)


def _controlled_by_flags(base: AnyConfig) -> set[str]:
    """Generator fields that some flag other than --preset sets."""
    samples = {"bool": True, "int": 8, "float": 1.0, "str": "1"}  # values that do set a field
    return {name for flag in model_flags("G")
            for name in model_fields(flag, samples[TrainConfig.__dataclass_fields__[flag].type], base)}


def _differences(built: AnyConfig, g_file: AnyConfig) -> list[str]:
    """Fields where preset `built` and generator `g_file` differ beyond what the flags set."""
    if type(built) is not type(g_file):
        return ["architecture"]
    controlled = _controlled_by_flags(g_file)
    return [f.name for f in dataclasses.fields(g_file)
            if f.name not in controlled and getattr(built, f.name) != getattr(g_file, f.name)]


def matching_preset(g_config: AnyConfig) -> str | None:
    """The first preset that, with some model flags, builds `g_config` (None: a custom generator)."""
    return next((name for name in PRESETS if not _differences(PRESETS[name], g_config)), None)


def _check_preset(name: str, g_file: AnyConfig, source: str, what: str) -> None:
    built = preset(name)
    if type(built) is not type(g_file):
        raise TrainingError(f"{source}: --preset {name} builds the {built.architecture} architecture; the "
                            f"generator in {what} is the {g_file.architecture} one (leave --preset out)")
    differ = _differences(built, g_file)
    if differ:
        raise TrainingError(f"{source}: --preset {name} is not the generator in {what} (its "
                            f"{', '.join(f'{n} is {getattr(g_file, n)!r}' for n in differ[:3])}); the networks "
                            f"come from the file: leave --preset out")


def check_given_flags(
    config: TrainConfig,
    files: dict[str, Any],  # {"G": the file's generator config, "D": its discriminator config or None}
    source: str,  # the file, for the message
    open_flags: frozenset[str] = frozenset(),  # flags that may change the file's networks here
) -> None:
    """TrainingError naming the first model flag this command gave that would change a network
    taken from the file; the message says what the file holds."""
    what = "the training state" if files.get("D") is not None else "the file"
    given = config.given_fields() - open_flags
    if "preset" in given:
        _check_preset(config.preset, files["G"], source, what)
    for flag in model_flags("G") + model_flags("D"):
        if flag not in given or flag == "preset":
            continue
        value = getattr(config, flag)
        for network, base in files.items():
            if base is None or network not in TrainConfig.__dataclass_fields__[flag].metadata["model"]:
                continue
            changed = apply_flags(base, {flag: value}, f"the {NETWORK_NAMES[network]} in {what}")
            fields = [n for n, v in model_fields(flag, value, base).items() if getattr(base, n) != v]
            if changed != base:
                held = ", ".join(f"{n} is {getattr(base, n)!r}" for n in fields)
                hint = HINTS[network] if config.resume else ""
                if flag == "g_modulated" and config.resume:
                    hint = "; --resume-modulate true w-modulates more levels of a saved G"
                raise TrainingError(
                    f"{source}: --{flag.replace('_', '-')} {value} does not fit the {NETWORK_NAMES[network]} in "
                    f"{what} (its {held}); --resume and --init-g take the networks from the file: leave the flag "
                    f"out{hint}"
                )


def widened_generator(g_file: AnyConfig, g_modulated: str, source: str) -> AnyConfig:
    """--resume-modulate: the file's generator with more levels w-modulated (never fewer)."""
    wide = apply_flags(g_file, {"g_modulated": g_modulated}, f"the generator in {source}")
    saved = ",".join(str(int(v)) for v in g_file.modulated)
    if len(wide.modulated) != len(g_file.modulated) or any(was and not now for was, now in zip(g_file.modulated, wide.modulated)):
        raise TrainingError(f"{source}: --g-modulated {g_modulated}: a saved G's w-modulated levels cannot become "
                            f"plain: pass --g-modulated {saved} or a superset of it")
    return wide
