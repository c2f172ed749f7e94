"""The training-state file: everything `--resume` needs, without a single pickle.

One `.safetensors` file. Tensors: G, D and G_ema state dicts ("G.", "D.", "G_ema." prefixes) and
both Adam states ("opt_G.<param index>.<exp_avg|exp_avg_sq|step>"; no exp_avg under beta1 = 0).
With --state-precision bfloat16 the running averages (Adam moments, G_ema) are stored in bfloat16
for a smaller file. Header metadata (JSON): the TrainConfig, the progress (step, nimg, and
d_start_nimg: where the discriminator started, for --d-warmup-kimg), the optimizers' param_groups,
the networks' configs ({"G": {"architecture", "config"}, "D": config}: what --resume builds) and the
dataset's identity (name, images, resolution). The last two are absent from older states.

Random numbers in training are drawn from a generator reseeded from (seed, rank, step) at every
step and the data order is a function of (seed, step), so progress alone restores them exactly.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gsgan_core.errors import TrainingError
from gsgan_core.io.atomic import atomic_path
from gsgan_core.models.config import GeneratorConfig
from gsgan_core.models.generator import Generator, modulate_state_dict

FORMAT_NAME = "gsgan-training-state"
# 2: the generator's synthesis layers are EqualLinear. A version 1 state (plain nn.Linear) cannot resume:
# its Adam moments belong to the old parameterisation. (Its G_ema converts: see io/checkpoint.py.)
FORMAT_VERSION = 2
STATE_FILE = "training-state.safetensors"


def _optimizer_tensors(
    prefix: str, optimizer: torch.optim.Optimizer, averages_dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], list]:
    state = optimizer.state_dict()
    # Adam with beta1 = 0 (StyleGAN's (0, 0.99)) overwrites exp_avg with the gradient at every step:
    # it carries nothing over, so it is not saved (load_into puts zeros back), 2-4 bytes per parameter.
    no_first_moment = all(group.get("betas", (1.0,))[0] == 0 for group in state["param_groups"])
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if key == "exp_avg" and no_first_moment:
                continue
            value = torch.as_tensor(value).detach().cpu()
            if key != "step" and value.is_floating_point():
                value = value.to(averages_dtype)  # load_state_dict casts back to the parameter's dtype
            tensors[f"{prefix}.{index}.{key}"] = value.contiguous()
    return tensors, state["param_groups"]


def save_training_state(
    path: str | os.PathLike,
    modules: dict[str, torch.nn.Module],  # {"G": G, "D": D, "G_ema": G_ema}
    optimizers: dict[str, torch.optim.Optimizer],  # {"opt_G": ..., "opt_D": ...}
    config: dict[str, Any],
    progress: dict[str, Any],  # {"step": int, "nimg": int}
    averages_dtype: torch.dtype = torch.float32,  # of the running averages: Adam moments and G_ema
    models: dict[str, Any] | None = None,  # {"G": {"architecture": str, "config": dict}, "D": dict}
    dataset: dict[str, Any] | None = None,  # {"name": str, "images": int, "resolution": int}
) -> None:
    """bfloat16 averages make the file about 40 % smaller, at the price of a resume that is close but
    not bit-exact; G and D themselves always stay float32."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            value = value.detach().cpu()
            if name == "G_ema" and value.is_floating_point():
                value = value.to(averages_dtype)  # load_state_dict copies it back into float32
            tensors[f"{name}.{key}"] = value.contiguous()
    groups = {}
    for name, optimizer in optimizers.items():
        opt_tensors, groups[name] = _optimizer_tensors(name, optimizer, averages_dtype)
        tensors.update(opt_tensors)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config),
        "progress": json.dumps(progress),
        "param_groups": json.dumps(groups),
        **{key: json.dumps(value) for key, value in (("models", models), ("dataset", dataset)) if value is not None},
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def resolve_state_path(path: str | os.PathLike) -> Path:
    """A state file, or a run folder that holds one."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise TrainingError(f"{path}: no training-state file to resume from")
    return path


def read_training_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, {"config", "progress", "param_groups"[, "models", "dataset"]}); TrainingError for anything else."""
    path = resolve_state_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise TrainingError(f"{path}: not a readable safetensors training state ({err})") from None
    if metadata.get("format") != FORMAT_NAME:
        raise TrainingError(f"{path}: not a gsgan training state (a generator checkpoint cannot resume training)")
    version = metadata.get("format_version", "1")
    if version != str(FORMAT_VERSION):
        raise TrainingError(
            f"{path}: training state of format version {version}; this gsgan resumes version {FORMAT_VERSION} only"
            " (version 1 was saved before the generator's layers became equalised-lr: start a new run)"
        )
    try:
        info = {key: json.loads(metadata[key]) for key in ("config", "progress", "param_groups")}
        info.update({key: json.loads(metadata[key]) for key in ("models", "dataset") if key in metadata})
    except (KeyError, ValueError, RecursionError) as err:  # ValueError: not JSON, or an integer too long
        raise TrainingError(f"{path}: training-state metadata is damaged ({err})") from None
    if not all(isinstance(info[key], dict) for key in info):
        raise TrainingError(f"{path}: training-state metadata is damaged (a field is not a JSON object)")
    info["path"] = str(path)
    return tensors, info


def load_into(
    tensors: dict[str, torch.Tensor],
    info: dict[str, Any],
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> None:
    """Restores modules and optimizers in place (on their own devices).

    The optimizers keep their own hyperparameters (lr, betas: this run's flags, so a resumed run may
    lower the learning rate); only the saved parameter lists and per-parameter state come back."""
    for name, module in modules.items():
        prefix = name + "."
        module_state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(module_state, strict=False)
        if missing or unexpected:
            raise TrainingError(f"training state does not fit {name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, optimizer in optimizers.items():
        prefix = name + "."
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, field = key[len(prefix):].split(".", 1)
                per_param.setdefault(int(index), {})[field] = value
        for values in per_param.values():
            if "exp_avg_sq" in values and "exp_avg" not in values:  # not saved under beta1 = 0: see above
                values["exp_avg"] = torch.zeros_like(values["exp_avg_sq"])
        saved, current = info["param_groups"][name], optimizer.state_dict()["param_groups"]
        if len(saved) != len(current):
            raise TrainingError(f"training state has {len(saved)} parameter groups for {name}, this run {len(current)}")
        groups = [{**now, "params": then["params"]} for now, then in zip(current, saved)]
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def modulate_training_state(
    tensors: dict[str, torch.Tensor], info: dict[str, Any], old: GeneratorConfig, new: GeneratorConfig
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A state whose G and G_ema have config `old`, made to fit config `new`, which w-modulates more
    levels (`modulate_state_dict`: the new G draws exactly what the old one did).

    G's Adam state is kept per parameter: it follows each parameter to its index in the new G. The
    replaced plain parameters' moments are dropped; their values live on as the new biases, which,
    like the new weights, have no Adam state yet, so Adam starts them from zero (as for a parameter
    it has not stepped). D and its optimiser are untouched.
    """
    out = {k: v for k, v in tensors.items() if not k.startswith(("G.", "G_ema.", "opt_G."))}
    for name in ("G", "G_ema"):
        prefix = name + "."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        out.update({prefix + k: v for k, v in modulate_state_dict(state, old, new).items()})
    with torch.device("meta"):  # parameter names in optimiser order, without allocating weights
        old_names = [name for name, _ in Generator(old).named_parameters()]
        new_index = {name: i for i, (name, _) in enumerate(Generator(new).named_parameters())}
    for key, value in tensors.items():
        if key.startswith("opt_G."):
            index, field = key[len("opt_G."):].split(".", 1)
            name = old_names[int(index)]
            if name in new_index:
                out[f"opt_G.{new_index[name]}.{field}"] = value
    groups = info["param_groups"]["opt_G"]
    if len(groups) != 1:
        raise TrainingError(f"cannot modulate a state whose G optimiser has {len(groups)} parameter groups (expected 1)")
    param_groups = {**info["param_groups"], "opt_G": [{**groups[0], "params": list(range(len(new_index)))}]}
    return out, {**info, "param_groups": param_groups}


# What gsgan_core.io.atomic.atomic_path leaves behind when a write is killed: ".NAME.XXXXXXXX.tmp"
# (tempfile.mkstemp's 8 random characters) beside NAME, for the files a run writes.
_INTERRUPTED_WRITE = re.compile(
    r"^\.(training-state\.safetensors|training_options\.json|network-[^/]*\.safetensors|fakes-[^/]*\.png)"
    r"\.[a-z0-9_]{8}\.tmp$"
)


def remove_interrupted_writes(folder: str | os.PathLike) -> list[Path]:
    """Removes the temporary files of a run's writes that never finished (a kill -9 mid-snapshot
    leaves one as large as the state); only that pattern, only in `folder`. Returns what went."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if _INTERRUPTED_WRITE.match(path.name) and path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed
