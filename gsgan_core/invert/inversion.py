"""`invert`: one image in, an `InversionResult` out; and the result's file.

The file is one .safetensors:

    tensors   ws [1, num_ws, w_dim]   the latent (W+; the W solution on every row for mode "w")
              w [1, w_dim]             the W solution
              label [25]               the camera of the fit (given, or estimated)
              target [R, R, 3 or 4]    the image as it was fitted (uint8, at the generator's resolution)
              G.<name>                 mode "pti" only: the tuned generator's whole state dict
    metadata  format "gsgan-inversion", format_version "1", mode, architecture and config (the
              generator's, so a PTI file rebuilds its generator alone), checkpoint, image, camera
              (source "label" or "auto", and the orbit pose), settings, losses, notes, elapsed_s

`load_inversion` reads it back (InversionFileError naming the file on any problem).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from gsgan_core.cameras import OrbitPose, labels_to_cameras
from gsgan_core.errors import CameraError, ConfigError, PathError
from gsgan_core.io.atomic import atomic_path

from .fit import (
    Cancel, InversionProgress, InvertSettings, _Session, fit_latents, has_background, pose_from_label, stage_steps,
    tune_generator, w_avg_of,
)
from .losses import Perceptual
from .target import Target, check_label, target_from_array

FORMAT_NAME = "gsgan-inversion"
FORMAT_VERSION = 1
GENERATOR_PREFIX = "G."
HISTORY_POINTS = 200  # loss curves are stored at most this long per stage (evenly thinned)


class InversionFileError(PathError):
    """An inversion file cannot be read, or does not fit the generator it is used with."""


@dataclass
class InversionResult:
    """An inverted image: its latent, its camera and, after PTI, the tuned generator's weights."""

    ws: Tensor  # [1, num_ws, w_dim] float32, CPU
    w: Tensor  # [1, w_dim] the W stage's solution
    label: Tensor  # [25] the camera of the fit
    pose: OrbitPose  # that camera as an orbit pose (estimated, or the nearest one to the label)
    camera_source: str  # "label" or "auto"
    mode: str  # "w", "w+" or "pti"
    architecture: str  # the generator's
    config: dict  # the generator's config, to_dict()
    generator_state: dict[str, Tensor] | None = None  # PTI: the tuned generator's state dict
    target: np.ndarray | None = None  # [R, R, 3 or 4] uint8: the image as fitted
    checkpoint: str = ""  # the generator file it was inverted with
    image: str = ""  # the image file
    settings: dict = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)  # stage -> loss per step
    notes: list[str] = field(default_factory=list)  # e.g. why the perceptual loss was off
    elapsed_s: float = 0.0

    @property
    def final_loss(self) -> float | None:
        for stage in ("pti", "w+", "w"):
            if self.losses.get(stage):
                return self.losses[stage][-1]
        return None

    def cameras(self) -> tuple[Tensor, Tensor]:  # cam2world [4, 4], K_norm [3, 3]
        return labels_to_cameras(self.label)

    def check_generator(self, G: nn.Module) -> None:
        """ConfigError unless `G` is the kind of generator this latent belongs to."""
        shape = (G.config.num_ws, G.config.w_dim)
        if G.config.architecture != self.architecture or tuple(self.ws.shape[1:]) != shape:
            raise ConfigError(f"this inversion belongs to a {self.architecture} generator with ws "
                              f"{list(self.ws.shape[1:])}; the generator given is {G.config.architecture} with "
                              f"{list(shape)}")

    def generator(self, base: nn.Module | None = None, device: torch.device | str | None = None) -> nn.Module:
        """The generator to render this latent with: for PTI, the tuned one (a copy of `base` with the
        tuned weights, or rebuilt from the file's config when `base` is None); otherwise `base` itself."""
        if self.generator_state is None:
            if base is None:
                raise ConfigError(f"a {self.mode} inversion holds no generator weights: open its checkpoint "
                                  f"({self.checkpoint or 'the one it was made with'}) and render ws with it")
            self.check_generator(base)
            return base
        if base is not None:
            self.check_generator(base)
            tuned = copy.deepcopy(base)
        else:
            from gsgan_core.models import build_generator
            from gsgan_core.models.config import config_from_dict

            tuned = build_generator(config_from_dict(self.config, self.architecture))
        tuned.load_state_dict(self.generator_state)
        device = device if device is not None else (next(base.parameters()).device if base is not None else "cpu")
        return tuned.to(device).eval().requires_grad_(False)

    # ------------------------------------------------------------------ file
    def save(self, path: str | os.PathLike) -> Path:
        """Writes the file atomically; returns its path."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {
            "ws": self.ws.detach().float().cpu().contiguous(),
            "w": self.w.detach().float().cpu().contiguous(),
            "label": self.label.detach().float().cpu().reshape(25).contiguous(),
        }
        if self.target is not None:
            tensors["target"] = torch.from_numpy(np.ascontiguousarray(self.target))
        if self.generator_state is not None:
            for name, value in self.generator_state.items():
                tensors[GENERATOR_PREFIX + name] = value.detach().cpu().contiguous()
        metadata = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "mode": self.mode,
            "architecture": self.architecture,
            "config": json.dumps(self.config),
            "checkpoint": self.checkpoint,
            "image": self.image,
            "camera": json.dumps({"source": self.camera_source, "pose": self.pose.to_dict()}),
            "settings": json.dumps(self.settings),
            "losses": json.dumps({k: _thin(v) for k, v in self.losses.items()}),
            "notes": json.dumps(self.notes),
            "elapsed_s": f"{self.elapsed_s:.3f}",
        }
        try:
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata=metadata)
        except OSError as err:
            raise InversionFileError(path, f"cannot be written ({err.strerror or err})") from None
        return path


def _thin(values: list[float]) -> list[float]:
    if len(values) <= HISTORY_POINTS:
        return [round(float(v), 6) for v in values]
    index = np.linspace(0, len(values) - 1, HISTORY_POINTS).round().astype(int)
    return [round(float(values[i]), 6) for i in index]


def load_inversion(path: str | os.PathLike) -> InversionResult:
    """Reads an inversion file (on the CPU)."""
    from safetensors import safe_open

    path = InversionFileError.check_file(path, "an inversion file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:  # safetensors raises its own error types for foreign or damaged files
        raise InversionFileError(path, f"is not a safetensors file ({type(err).__name__}: {str(err)[:120]})") from None
    if metadata.get("format") != FORMAT_NAME:
        raise InversionFileError(path, f"is a safetensors file but not a gsgan inversion (no 'format: {FORMAT_NAME}')")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise InversionFileError(path, f"has format version {metadata.get('format_version')!r}; this gsgan reads "
                                       f"version {FORMAT_VERSION}")
    missing = [k for k in ("ws", "w", "label") if k not in tensors]
    if missing:
        raise InversionFileError(path, f"lacks the tensors {', '.join(missing)}")
    try:
        camera = json.loads(metadata["camera"])
        pose = OrbitPose.from_dict(camera["pose"])
        config = json.loads(metadata["config"])
        settings = json.loads(metadata.get("settings", "{}"))
        losses = json.loads(metadata.get("losses", "{}"))
        notes = json.loads(metadata.get("notes", "[]"))
        label = check_label(tensors["label"], path)
        mode, architecture = metadata["mode"], metadata["architecture"]
    except (KeyError, TypeError, ValueError, RecursionError, CameraError) as err:
        raise InversionFileError(path, f"has damaged metadata ({type(err).__name__}: {err})") from None
    state = {k[len(GENERATOR_PREFIX):]: v for k, v in tensors.items() if k.startswith(GENERATOR_PREFIX)}
    if mode == "pti" and not state:
        raise InversionFileError(path, "is a PTI inversion without its tuned generator weights")
    target = tensors.get("target")
    return InversionResult(
        ws=tensors["ws"].float(), w=tensors["w"].float(), label=label, pose=pose,
        camera_source=str(camera.get("source", "label")), mode=mode, architecture=architecture, config=config,
        generator_state=state or None, target=None if target is None else target.numpy(),
        checkpoint=metadata.get("checkpoint", ""), image=metadata.get("image", ""), settings=settings,
        losses=losses, notes=notes, elapsed_s=float(metadata.get("elapsed_s", 0) or 0),
    )


# ====================================================================== the one-image entry point
def invert(
    G: nn.Module,
    image: Target | np.ndarray,  # a Target of one (load_image), or pixels [H, W, 3|4]
    camera: Tensor | list | str = "auto",  # the image's 25-value label, or "auto" to estimate it
    settings: InvertSettings | None = None,
    *,
    prior: OrbitPose | None = None,  # the checkpoint's camera (info.camera): estimated cameras use its
    #                                  radius, pivot and fov, and a label's turntable its pivot
    perceptual: Perceptual | None = None,  # a loaded VGG16 (Perceptual.load(path)); None: pixels only
    progress: Callable[[InversionProgress], None] | None = None,
    cancel: Cancel = None,
    resolution: int | None = None,  # fit at this size (default: the generator's image resolution)
    checkpoint: str = "",  # recorded in the result
) -> InversionResult:
    """Inverts one image into W, then W+ (modes "w+", "pti"), then tunes a copy of the generator (mode
    "pti"). G is never modified, so it may be a viewer's generator. Raises InversionCancelled when
    `cancel` is set, ConfigError / CameraError for bad arguments."""
    start = time.perf_counter()
    settings = (settings or InvertSettings()).check()
    prior = prior or OrbitPose()
    resolution = int(resolution or G.config.image_resolution)
    if isinstance(image, Target):
        target = image
        if target.batch_size != 1:
            raise ConfigError(f"invert takes one image; got a batch of {target.batch_size} (use fit_latents)")
        if target.resolution != resolution:
            raise ConfigError(f"the image is {target.resolution} px; the fit runs at {resolution} px")
    else:
        target = target_from_array(image, resolution)
    auto = isinstance(camera, str)
    if auto and camera != "auto":
        raise ConfigError(f"camera must be a 25-value label or 'auto', got {camera!r}")
    label = None if auto else check_label(camera, "the camera label")
    notes = []
    if perceptual is None:
        notes.append("perceptual loss off: no VGG16 weights were given (nothing is downloaded)")
    if target.alpha is not None and has_background(G):
        notes.append("the image's alpha was used as a mask only: this generator draws a background")
    steps = stage_steps(settings, auto)
    session = _Session(settings, sum(steps.values()), progress, cancel, start)
    fit = fit_latents(G, target, None if auto else label[None], settings, prior=prior, perceptual=perceptual,
                      _session=session)
    losses = dict(fit.losses)
    state = None
    if settings.mode == "pti":
        tuned, losses["pti"], _ = tune_generator(G, target, fit.ws, fit.labels[0], settings, prior=prior,
                                                 perceptual=perceptual, _session=session)
        state = {k: v.detach().cpu() for k, v in tuned.state_dict().items()}
        del tuned
    if auto:
        pose = OrbitPose(yaw=math.radians(float(fit.yaw_deg[0])), pitch=math.radians(float(fit.pitch_deg[0])),
                         radius=prior.radius, pivot=prior.pivot, fov_deg=prior.fov_deg)
    else:
        pose = pose_from_label(fit.labels[0], prior)
    return InversionResult(
        ws=fit.ws, w=fit.w, label=fit.labels[0], pose=pose, camera_source="auto" if auto else "label",
        mode=settings.mode, architecture=G.config.architecture, config=G.config.to_dict(), generator_state=state,
        target=target.rgba_uint8(0), checkpoint=checkpoint, image=target.names[0] if target.names else "",
        settings=settings.to_dict(), losses=losses, notes=notes, elapsed_s=time.perf_counter() - start,
    )


def average_latent(G: nn.Module) -> Tensor:  # [1, num_ws, w_dim]
    """The average head's ws: what an inversion starts from (and the benchmark's baseline)."""
    return w_avg_of(G).detach()[None, None].expand(1, G.config.num_ws, -1).clone()
