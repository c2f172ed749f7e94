"""Generator checkpoints: one `.safetensors` file, weights plus everything needed to rebuild the model.

Layout (safetensors header metadata is a str -> str map; values below are JSON):
    format          "gsgan-generator"
    format_version  "2"   (version 1 files, whose synthesis layers were plain nn.Linear, are converted on load)
    architecture    "gsgan" (the official network) | "lite" (gsgan's own; files without the key are lite)
    config          the architecture's config, to_dict()   (it names the camera model: config.camera_model)
    training        {"kimg": float, "step": int, ...}      progress when saved
    dataset         {"name": str, "resolution": int}
    camera          OrbitPose.to_dict()                    the viewer's default camera
    weight_dtype    "float32" | "float16"                  how tensors are stored; load restores float32
Tensors: the generator's state_dict (the EMA weights when saved by training).

Nothing here unpickles anything: a pickle handed to `load_checkpoint` is recognised and refused.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gsgan_core.cameras import OrbitPose
from gsgan_core.errors import CameraError, CheckpointError, ConfigError
from gsgan_core.io.atomic import atomic_path
from gsgan_core.models import build_generator
from gsgan_core.models.config import ARCHITECTURES, AnyConfig, config_from_dict
from gsgan_core.models.layers import EqualLinear

FORMAT_NAME = "gsgan-generator"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED_METADATA = ("format", "format_version", "config", "training", "dataset", "camera", "weight_dtype")
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself (readable without loading the weights)."""

    path: str
    config: AnyConfig
    training: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    camera: OrbitPose = field(default_factory=OrbitPose)
    weight_dtype: str = "float32"
    format_version: int = FORMAT_VERSION

    @property
    def kimg(self) -> float:
        return float(self.training.get("kimg", 0.0))

    @property
    def resolution(self) -> int:
        return int(self.dataset.get("resolution", self.config.image_resolution))


def save_checkpoint(
    path: str | os.PathLike,
    generator: torch.nn.Module,  # either architecture's generator (it has .config)
    training: dict[str, Any] | None = None,  # e.g. {"kimg": 12.5, "step": 400}
    dataset: dict[str, Any] | None = None,  # e.g. {"name": "heads", "resolution": 128}
    camera: OrbitPose | None = None,
    weight_dtype: torch.dtype = torch.float32,  # float16 halves the file; load restores float32
) -> None:
    """Writes the generator atomically: a crash mid-write leaves any previous file intact."""
    if weight_dtype not in (torch.float32, torch.float16):
        raise ValueError("weight_dtype must be torch.float32 or torch.float16")
    dtype_name = "float16" if weight_dtype == torch.float16 else "float32"
    tensors = {}
    for name, value in generator.state_dict().items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(weight_dtype)
        tensors[name] = value.contiguous()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "architecture": generator.config.architecture,
        "config": json.dumps(generator.config.to_dict()),
        "training": json.dumps(training or {}),
        "dataset": json.dumps(dataset or {"name": "", "resolution": generator.config.image_resolution}),
        "camera": json.dumps((camera or OrbitPose()).to_dict()),
        "weight_dtype": dtype_name,
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _read_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header, checked against the file's size, without reading the tensors."""
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a checkpoint file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(path, f"too short to be a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len == 0 or header_len > min(_MAX_HEADER_BYTES, size - 8):
            # Not a safetensors header; say what it is if we can tell (without unpickling it).
            if head[:2] == b"PK" or (head[:1] == b"\x80" and 2 <= head[1] <= 5):
                raise CheckpointError(
                    path,
                    "is a pickle or a torch.save archive, not a safetensors file; gsgan never unpickles "
                    "files (they can run code). Convert it with the tool that made it, to safetensors.",
                )
            raise CheckpointError(path, "is not a safetensors file (its 8-byte header length is invalid), or is truncated")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(path, "is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "is not a safetensors file (its header is not a JSON object)")
    data_end = max(
        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)),
        default=0,
    )
    if 8 + header_len + data_end > size:
        raise CheckpointError(
            path, f"is truncated: the header promises {8 + header_len + data_end} bytes, the file has {size}"
        )
    return header


def _parse_metadata(path: Path, header: dict[str, Any]) -> CheckpointInfo:
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(
            path, "is a safetensors file but not a gsgan generator checkpoint (no 'format: gsgan-generator' metadata)"
        )
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise CheckpointError(path, f"metadata is missing {missing}")
    try:
        version = int(metadata["format_version"])
    except ValueError:
        raise CheckpointError(path, f"format_version {metadata['format_version']!r} is not a number") from None
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            path, f"has format version {version}; this gsgan reads versions {READABLE_VERSIONS} (upgrade gsgan?)"
        )
    parsed = {}
    for key in ("config", "training", "dataset", "camera"):
        try:
            parsed[key] = json.loads(metadata[key])
        except json.JSONDecodeError:
            raise CheckpointError(path, f"metadata '{key}' is not valid JSON") from None
        if not isinstance(parsed[key], dict):
            raise CheckpointError(path, f"metadata '{key}' is not a JSON object")
    architecture = metadata.get("architecture", "lite")
    if architecture not in ARCHITECTURES:
        raise CheckpointError(path, f"unknown architecture {architecture!r}; this gsgan knows {sorted(ARCHITECTURES)}")
    try:
        config = config_from_dict(parsed["config"], architecture)
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"metadata 'config' is not a valid generator config: {err}") from None
    try:
        camera = OrbitPose.from_dict(parsed["camera"])
    except CameraError as err:
        raise CheckpointError(path, f"metadata 'camera' is invalid: {err}") from None
    if metadata["weight_dtype"] not in ("float32", "float16"):
        raise CheckpointError(path, f"unknown weight_dtype {metadata['weight_dtype']!r}")
    return CheckpointInfo(
        path=str(path),
        config=config,
        training=parsed["training"],
        dataset=parsed["dataset"],
        camera=camera,
        weight_dtype=metadata["weight_dtype"],
        format_version=version,
    )


def read_checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """The checkpoint's metadata, checked; no weights are read."""
    path = Path(path)
    return _parse_metadata(path, _read_header(path))


def load_checkpoint(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, CheckpointInfo]:
    """Rebuilds the generator from the file alone (eval mode, float32, on `device`)."""
    path = Path(path)
    header = _read_header(path)
    info = _parse_metadata(path, header)
    generator = build_generator(info.config)
    expected = generator.state_dict()
    stored = {k: v for k, v in header.items() if k != "__metadata__"}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_short_list(unexpected)}")
        raise CheckpointError(path, "does not match its config: " + "; ".join(parts))
    for name, value in expected.items():
        if list(stored[name]["shape"]) != list(value.shape):
            raise CheckpointError(
                path, f"tensor '{name}' has shape {list(stored[name]['shape'])}, the config needs {list(value.shape)}"
            )
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for malformed payloads
        raise CheckpointError(path, f"cannot be read as safetensors: {err}") from None
    tensors = {k: v.to(expected[k].dtype) for k, v in tensors.items()}
    if info.format_version == 1:
        tensors = _weights_from_version_1(generator, tensors)
    generator.load_state_dict(tensors)
    return generator.to(device).eval().requires_grad_(False), info


def _weights_from_version_1(generator: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Version 1 stored the synthesis network's linear layers as plain nn.Linear weights W; they are now
    EqualLinear layers that compute with weight * weight_gain, so weight = W / weight_gain gives the same
    generator exactly. The mapping network and the norms' affine layers were EqualLinear already."""
    tensors = dict(tensors)
    for name, module in generator.named_modules():
        was_equalised = name.startswith("mapping.") or name.endswith(".affine")
        if isinstance(module, EqualLinear) and not was_equalised:
            tensors[f"{name}.weight"] = tensors[f"{name}.weight"] / module.weight_gain
    return tensors


def _short_list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > limit else ''}]"
