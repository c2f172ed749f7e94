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

import dataclasses
import json
import math
import os
import struct
import typing
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
# safetensors dtype names -> bytes per element (the format's full list)
_DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_TORCH_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.int32: "I32",
                      torch.bool: "BOOL", torch.uint8: "U8"}
_WEIGHT_DTYPE_NAMES = {"float32": "F32", "float16": "F16"}  # metadata weight_dtype -> stored float tensors
# Plausibility limits on a checkpoint's config, checked before anything is built: far above every real
# network, low enough that a hostile file cannot make the loader loop or overflow while sizing one.
_MAX_CONFIG_INT = 1 << 24
_MAX_CONFIG_DEPTH = 256  # mapping_layers, level0_layers, transformer_layers
_MAX_LEVELS = 16
_MAX_GAUSSIANS = 1 << 31
_DEPTH_FIELDS = ("mapping_layers", "level0_layers", "transformer_layers")
_F32 = torch.finfo(torch.float32)


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
    CheckpointError.check_file(path, "a generator file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _refusal(path, f"too short to be a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len == 0 or header_len > min(_MAX_HEADER_BYTES, size - 8):
            # Not a safetensors header; say what it is if we can tell (without unpickling it).
            if head[:2] == b"PK" or (head[:1] == b"\x80" and 2 <= head[1] <= 5):
                raise _refusal(
                    path,
                    "is a pickle or a torch.save archive, not a safetensors file; gsgan never unpickles "
                    "files (they can run code). Convert it with the tool that made it, to safetensors.",
                )
            raise _refusal(path, "is not a safetensors file (its 8-byte header length is invalid), or is truncated")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except ValueError as err:  # not UTF-8, not JSON, or an integer too long to convert
        raise _refusal(path, f"is not a safetensors file (its header is not JSON: {_json_problem(err)})") from None
    except RecursionError:
        raise _refusal(path, "is not a safetensors file (its header is JSON nested too deep)") from None
    if not isinstance(header, dict):
        raise _refusal(path, "is not a safetensors file (its header is not a JSON object)")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict):
        raise _refusal(path, f"header '__metadata__' must be a JSON object, got {_json_type(metadata)}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _refusal(path, f"metadata {_quoted(key)} must be a string, got {_json_type(value)}")
    data_end = _check_entries(path, {k: v for k, v in header.items() if k != "__metadata__"})
    if 8 + header_len + data_end > size:
        raise _refusal(
            path, f"is truncated: the header promises {8 + header_len + data_end} bytes, the file has {size}"
        )
    if 8 + header_len + data_end < size:
        raise _refusal(
            path, f"has {size - 8 - header_len - data_end} bytes after its last tensor (the header promises "
            f"{8 + header_len + data_end} bytes, the file has {size})"
        )
    return header


def _check_entries(path: Path, entries: dict[str, Any]) -> int:
    """Every tensor entry of the header well-formed, the entries tiling the data without gaps or
    overlaps (as safetensors requires); returns where the data ends."""
    spans = []
    for name, entry in entries.items():
        where = f"header entry {_quoted(name)}"
        if not isinstance(entry, dict):
            raise _refusal(path, f"{where} must be a JSON object, got {_json_type(entry)}")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in entry:
                raise _refusal(path, f"{where} has no '{key}'")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _DTYPE_SIZES:
            raise _refusal(path, f"{where}: 'dtype' {_short_repr(dtype)} is not a safetensors dtype")
        if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d < 2**63 for d in shape):
            raise _refusal(path, f"{where}: 'shape' must be a list of non-negative integers, got {_short_repr(shape)}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise _refusal(path, f"{where}: 'data_offsets' must be two integers 0 <= begin <= end, "
                                  f"got {_short_repr(offsets)}")
        nbytes = math.prod(shape) * _DTYPE_SIZES[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise _refusal(path, f"{where}: 'data_offsets' {offsets} span {offsets[1] - offsets[0]} bytes; "
                                  f"{dtype} of shape {_short_repr(shape)} needs {nbytes}")
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            problem = "overlaps the tensor before it" if begin < end else f"leaves a gap of {begin - end} bytes"
            raise _refusal(path, f"header entry {_quoted(name)}: 'data_offsets' [{begin}, {stop}] {problem}")
        end = stop
    return end


def _refusal(path: Path, problem: str) -> CheckpointError:
    """The error for `path`; what the file itself says (names, keys, values) is shown with its control
    characters escaped, so the message stays one line whatever the file holds."""
    return CheckpointError(path, "".join(c if c.isprintable() else repr(c)[1:-1] for c in problem))


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object"}
    return f"{names.get(type(value), type(value).__name__)} ({_short_repr(value)})"


def _short_repr(value: Any, limit: int = 40) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_problem(err: Exception) -> str:
    """json's reason, short (its advice to raise Python's integer-digit limit is cut)."""
    return str(err).split("; use sys.")[0][:100]


def _quoted(name: str, limit: int = 60) -> str:
    """'name' as the file spells it, cut short if long (a key can be megabytes)."""
    return f"'{name}'" if len(name) <= limit else f"'{name[: limit - 3]}...'"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_metadata(path: Path, header: dict[str, Any]) -> CheckpointInfo:
    metadata = header.get("__metadata__") or {}  # _read_header checked: a str -> str map
    if metadata.get("format") != FORMAT_NAME:
        raise _refusal(
            path, "is a safetensors file but not a gsgan generator checkpoint (no 'format: gsgan-generator' metadata)"
        )
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise _refusal(path, f"metadata is missing {missing}")
    try:
        version = int(metadata["format_version"])
    except ValueError:
        raise _refusal(path, f"format_version {_short_repr(metadata['format_version'])} is not a number") from None
    if version not in READABLE_VERSIONS:
        raise _refusal(
            path, f"has format version {version}; this gsgan reads versions {READABLE_VERSIONS} (upgrade gsgan?)"
        )
    parsed = {}
    for key in ("config", "training", "dataset", "camera"):
        try:
            parsed[key] = json.loads(metadata[key])
        except (ValueError, RecursionError) as err:  # ValueError: also an integer too long to convert
            raise _refusal(path, f"metadata '{key}' is not valid JSON ({_json_problem(err)})") from None
        if not isinstance(parsed[key], dict):
            raise _refusal(path, f"metadata '{key}' must be a JSON object, got {_json_type(parsed[key])}")
    architecture = metadata.get("architecture", "lite")
    if architecture not in ARCHITECTURES:
        raise _refusal(path, f"unknown architecture {architecture!r}; this gsgan knows {sorted(ARCHITECTURES)}")
    config = _config(path, parsed["config"], architecture)
    _check_fields(path, "camera", parsed["camera"], _CAMERA_FIELDS)  # types first: OrbitPose checks the rest
    try:
        camera = OrbitPose.from_dict(parsed["camera"])
    except CameraError as err:
        raise _refusal(path, f"metadata 'camera' is invalid: {err}") from None
    if metadata["weight_dtype"] not in _WEIGHT_DTYPE_NAMES:
        raise _refusal(path, f"unknown weight_dtype {metadata['weight_dtype']!r}")
    _check_fields(path, "training", parsed["training"], _TRAINING_FIELDS)
    _check_fields(path, "dataset", parsed["dataset"], _DATASET_FIELDS)
    return CheckpointInfo(
        path=str(path),
        config=config,
        training=parsed["training"],
        dataset=parsed["dataset"],
        camera=camera,
        weight_dtype=metadata["weight_dtype"],
        format_version=version,
    )


# Known entries of 'training', 'dataset' and 'camera': (type, lowest, highest); other keys are kept as they are.
_TRAINING_FIELDS = {"kimg": (float, 0, None), "step": (int, 0, 2**62), "render_supersample": (int, 1, 64),
                    "imported_from": (str, None, None), "network": (str, None, None),
                    "module_sha256": (str, None, None)}
_DATASET_FIELDS = {"name": (str, None, None), "resolution": (int, 1, 1 << 16)}
_CAMERA_FIELDS = {f.name: (typing.get_type_hints(OrbitPose)[f.name], None, None) for f in dataclasses.fields(OrbitPose)}


def _check_fields(path: Path, what: str, data: dict[str, Any], fields: dict[str, tuple[Any, Any, Any]]) -> None:
    for key, (kind, lowest, highest) in fields.items():
        if key in data:
            _typed(path, f"metadata '{what}': {key}", data[key], kind)
            if lowest is not None and data[key] < lowest:
                raise _refusal(path, f"metadata '{what}': {key} must be at least {lowest}, got {data[key]!r}")
            if highest is not None and data[key] > highest:
                raise _refusal(path, f"metadata '{what}': {key} must be at most {highest}, "
                                      f"got {_short_repr(data[key])}")


def _typed(path: Path, where: str, value: Any, kind: Any, config: bool = False) -> Any:
    """`value` (from JSON) as the type `kind`; CheckpointError naming `where` otherwise. With `config`, also
    within what a network can be built from: integers up to _MAX_CONFIG_INT, floats of float32 magnitude."""
    if typing.get_origin(kind) is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list):
            raise _refusal(path, f"{where} must be a list, got {_json_type(value)}")
        if len(value) > _MAX_LEVELS:
            raise _refusal(path, f"{where} has {len(value)} entries; at most {_MAX_LEVELS}")
        return tuple(_typed(path, f"{where}[{i}]", item, item_kind, config) for i, item in enumerate(value))
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = _is_int(value)
        if ok and config and abs(value) > _MAX_CONFIG_INT:
            raise _refusal(path, f"{where} must be at most {_MAX_CONFIG_INT} in size, got {_short_repr(value)}")
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not (abs(value) <= 1e300 and math.isfinite(value)):  # (a JSON integer can be any size)
            raise _refusal(path, f"{where} must be a finite number, got {_short_repr(value)}")
        if ok and config and not (value == 0 or _F32.tiny <= abs(value) <= _F32.max):
            # config floats become float32 tensors, or are squared and logged while the network is built
            raise _refusal(path, f"{where} must be 0 or a float32 magnitude in [{_F32.tiny:.3g}, {_F32.max:.3g}], "
                                 f"got {_short_repr(value)}")
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a config field of a type this reader does not know
        raise _refusal(path, f"{where}: cannot check a value of type {kind}")
    if not ok:
        expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
        raise _refusal(path, f"{where} must be {expected}, got {_json_type(value)}")
    return value


def _config(path: Path, data: dict[str, Any], architecture: str) -> AnyConfig:
    """The config, every value checked for its JSON type and range before the class sees it."""
    cls = ARCHITECTURES[architecture]
    hints = typing.get_type_hints(cls)
    kinds = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    unknown = sorted(_quoted(k) for k in data if k not in kinds)
    if unknown:
        raise _refusal(path, f"metadata 'config' has keys that {architecture} generators do not have: "
                              f"{_short_list(unknown)}")
    values = {key: _typed(path, f"metadata 'config': {key}", value, kinds[key], config=True)
              for key, value in data.items()}
    for key in _DEPTH_FIELDS:
        if key in values and values[key] > _MAX_CONFIG_DEPTH:
            raise _refusal(path, f"metadata 'config': {key} must be at most {_MAX_CONFIG_DEPTH}, got {values[key]}")
    try:
        config = config_from_dict(values, architecture)
    except ConfigError as err:
        raise _refusal(path, f"metadata 'config' is not a valid generator config: {err}") from None
    if config.num_gaussians > _MAX_GAUSSIANS:
        raise _refusal(path, f"metadata 'config' describes {config.num_gaussians} Gaussians; at most "
                              f"{_MAX_GAUSSIANS}")
    return config


def read_checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """The checkpoint's metadata, checked; no weights are read."""
    path = Path(path)
    return _parse_metadata(path, _read_header(path))


def load_checkpoint(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, CheckpointInfo]:
    """Rebuilds the generator from the file alone (eval mode, float32, on `device`).

    The whole header and config are checked first, against the network the config describes (sized
    without allocating it); then the values are read and must be finite. Anything wrong raises
    CheckpointError naming the file and what is wrong with it."""
    path = Path(path)
    header = _read_header(path)
    info = _parse_metadata(path, header)
    expected = _expected_tensors(path, info.config)
    stored = {k: v for k, v in header.items() if k != "__metadata__"}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_short_list([_quoted(n)[1:-1] for n in unexpected])}")
        raise _refusal(path, "does not match its config: " + "; ".join(parts))
    for name, (shape, dtype) in expected.items():
        if list(stored[name]["shape"]) != shape:
            raise _refusal(
                path, f"tensor '{name}' has shape {list(stored[name]['shape'])}, the config needs {shape}"
            )
        want = _WEIGHT_DTYPE_NAMES[info.weight_dtype] if dtype.is_floating_point else _TORCH_DTYPE_NAMES.get(dtype)
        if stored[name]["dtype"] != want:
            saved_as = f"weight_dtype {info.weight_dtype}" if dtype.is_floating_point else "its type"
            raise _refusal(path, f"tensor '{name}' is stored as {stored[name]['dtype']}; the metadata "
                                  f"({saved_as}) says it was saved as {want}")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for malformed payloads
        raise _refusal(path, f"cannot be read as safetensors: {err}") from None
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise _refusal(path, f"tensor '{name}' holds {bad} values that are not finite (NaN or inf)")
    generator = build_generator(info.config)
    tensors = {k: v.to(expected[k][1]) for k, v in tensors.items()}
    if info.format_version == 1:
        tensors = _weights_from_version_1(generator, tensors)
    generator.load_state_dict(tensors)
    return generator.to(device).eval().requires_grad_(False), info


def _expected_tensors(path: Path, config: AnyConfig) -> dict[str, tuple[list[int], torch.dtype]]:
    """name -> (shape, dtype) of the state dict the config describes, from a network built on the meta
    device: sizes only, no memory, so a config can be checked against the header before any real build."""
    try:
        with torch.device("meta"):
            network = build_generator(config)
    except ConfigError as err:
        raise _refusal(path, f"metadata 'config' is not a valid generator config: {err}") from None
    except Exception as err:  # the checks above should leave nothing for here; still never a traceback
        raise _refusal(path, f"metadata 'config' describes a network that cannot be built "
                              f"({type(err).__name__}: {err})") from None
    return {name: (list(value.shape), value.dtype) for name, value in network.state_dict().items()}


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
