"""What the Latent panel's numbers mean in W space: seeds A and B (or a held latent as B: an
inversion), truncation, the A -> B line,
per-level mixing and the principal directions of W. Pure functions of the generator; the engine
calls them and caches the result.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gsgan_core.cameras import OrbitPose, cameras_to_labels
from gsgan_core.errors import ConfigError
from gsgan_core.models.generator import Generator, interpolate_ws, mix_levels, truncate, z_from_seeds
from gsgan_core.models.hierarchy import w_avg_of

from .state import LatentState


def mixable_parts(generator: Generator | None) -> list[str]:
    """Names of the entries of LatentState.take_b: one per level, then the background."""
    if generator is None:
        return []
    config = generator.config
    return [f"level {l}" for l in range(config.num_levels)] + (["background"] if config.background else [])


def conditioning_label(generator: Generator, pose: OrbitPose, device: torch.device) -> Tensor | None:
    """[1, 25] the camera label a pose-conditioned mapping gets (the checkpoint's view), or None."""
    if not generator.config.c_dim:
        return None
    cam2world, K_norm = pose.cameras(device=device, dtype=torch.float32)
    return cameras_to_labels(cam2world, K_norm)[None]


def principal_directions(
    generator: Generator, pose: OrbitPose, device: torch.device, k: int, samples: int
) -> tuple[Tensor, Tensor]:  # [k, w_dim] unit directions, [k] standard deviation of w along each
    """Top principal directions of W from `samples` mapped z (a fixed seed: the same checkpoint
    always gives the same sliders)."""
    config = generator.config
    k = min(k, config.w_dim, max(samples - 1, 1))
    z = torch.randn(samples, config.z_dim, generator=torch.Generator().manual_seed(0))
    c = conditioning_label(generator, pose, torch.device("cpu"))
    c = None if c is None else c[0].expand(len(z), -1).to(device)
    with torch.inference_mode():
        w = generator.mapping(z.to(device), c)[:, 0].float()
    w = w - w.mean(0)
    _, s, vh = torch.linalg.svd(w, full_matrices=False)
    stds = s[:k] / math.sqrt(max(len(w) - 1, 1))
    return vh[:k].contiguous(), stds.contiguous()


def check_latent(generator: Generator, name: str, ws: Tensor) -> None:
    """ConfigError unless `ws` [1, num_ws, w_dim] is a latent of `generator`."""
    shape = (1, generator.config.num_ws, generator.config.w_dim)
    if tuple(ws.shape) != shape:
        raise ConfigError(f"latent {name!r} has shape {list(ws.shape)}; this generator's ws are {list(shape)}")


def edited_ws(
    generator: Generator, latent: LatentState, device: torch.device,
    c: Tensor | None = None, directions: Tensor | None = None, stds: Tensor | None = None,
    latents: dict[str, Tensor] | None = None,
) -> Tensor:  # [1, num_ws, w_dim]
    """The edited latent: truncation, A->B interpolation, per-level mixing, directions. B is seed B's
    latent, or `latents[latent.latent_b]` (an inversion: truncated like a seed's, toward w_avg)."""
    config = generator.config
    parts = mixable_parts(generator)
    if len(latent.take_b) > len(parts):
        raise ConfigError(f"take_b has {len(latent.take_b)} entries; this generator has {len(parts)}")
    z = z_from_seeds([latent.seed_a, latent.seed_b], config.z_dim, device)  # [2, z_dim]
    cutoff = int(latent.cutoff) if latent.cutoff > 0 else None
    ws_ab = generator.mapping(z, None if c is None else c.expand(2, -1), psi=float(latent.psi), cutoff=cutoff)
    ws_a, ws_b = ws_ab[:1], ws_ab[1:]  # [1, num_ws, w_dim] each
    if latent.latent_b:
        held = (latents or {}).get(latent.latent_b)
        if held is None:
            raise ConfigError(f"no latent named {latent.latent_b!r} is open")
        check_latent(generator, latent.latent_b, held)
        w_avg = w_avg_of(generator)
        ws_b = truncate(held.to(device=device, dtype=ws_a.dtype), w_avg, float(latent.psi), cutoff)
    ws = interpolate_ws(ws_a, ws_b, float(latent.interp))
    if any(latent.take_b):
        ws = mix_levels(ws, ws_b, list(latent.take_b), config)
    if latent.directions and directions is not None:
        strengths = torch.tensor(latent.directions[: len(directions)], device=device)
        k = len(strengths)
        ws = ws + (strengths * stds[:k]) @ directions[:k]  # an offset [w_dim] on every row
    return ws
