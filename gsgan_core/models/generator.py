"""The hierarchical Gaussian generator, top to bottom.

    z ──mapping──> ws [B, num_ws, w_dim]
                    │
    256 learnable points ─> tokens ─> level 0: global transformer ─> heads ─> 256 Gaussians
                                        level 1: kNN block, x4 upsample ─> heads ─> 1,024 Gaussians
                                        level 2: kNN block, x4 upsample ─> heads ─> 4,096
                                        level 3+: sibling block (no w), x4 ─> heads ─> x4 each level
    (optional) 2,000 background points ─> block ─> x4 ─> 8,000 Gaussians on a sphere of radius 3

Each level has two heads: an *anchor* head whose Gaussians are the parents of the next level, and a
*render* head whose Gaussians are drawn. Both are residuals of the parent anchor (see
`decode_children`), which is what makes the hierarchy go coarse to fine by construction.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsgan_core.errors import ConfigError
from gsgan_core.gaussians import Gaussians, quat_to_rotmat
from gsgan_core.models.config import GeneratorConfig, level0_log_scale
from gsgan_core.models.hierarchy import Params, concat_gaussians, hierarchy_indices  # noqa: F401 (re-exported)
from gsgan_core.models.layers import Block, EqualLinear, Norm, LayerScale, Upsample

LOG_SCALE_MIN, LOG_SCALE_MAX = -8.0, 0.0
LEVEL0_OPACITY_LOGIT = math.log(0.1 / 0.9)  # logit(0.1)
FRONTAL_VIEW_DIR = (0.0, 0.0, -1.0)  # a camera on +z looking at the origin


# ====================================================================== mapping network
def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * (x.square().mean(dim=-1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """StyleGAN2 mapping z (+ camera label c) -> w, broadcast to num_ws rows, with truncation.

    w_avg is tracked during training (beta 0.998) and is the centre of truncation.
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = config.z_dim, config.c_dim, config.w_dim
        self.num_ws, self.w_avg_beta = config.num_ws, config.w_avg_beta
        self.embed_c = EqualLinear(config.c_dim, config.w_dim) if config.c_dim else None
        widths = [config.z_dim + (config.w_dim if config.c_dim else 0)] + [config.w_dim] * config.mapping_layers
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_mul=config.mapping_lr_mul) for a, b in zip(widths[:-1], widths[1:])
        )
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(
        self,
        z: Tensor,  # [B, z_dim]
        c: Tensor | None = None,  # [B, c_dim] camera labels, if the mapping is pose-conditioned
        psi: float = 1.0,  # truncation: w = w_avg + psi * (w - w_avg)
        cutoff: int | None = None,  # truncate only the first `cutoff` rows of ws (None: all)
        update_w_avg: bool = False,
    ) -> Tensor:  # ws [B, num_ws, w_dim]
        x = normalize_2nd_moment(z)
        if self.embed_c is not None:
            if c is None:
                raise ValueError(f"this generator's mapping is conditioned on a {self.c_dim}-d camera label; pass c")
            x = torch.cat([x, normalize_2nd_moment(self.embed_c(c))], dim=1)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * math.sqrt(2)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        return truncate(ws, self.w_avg, psi, cutoff)


def truncate(ws: Tensor, w_avg: Tensor, psi: float, cutoff: int | None = None) -> Tensor:
    """ws [B, num_ws, w_dim] pulled toward w_avg [w_dim] by psi in rows [0, cutoff)."""
    if psi == 1:
        return ws
    cutoff = ws.shape[1] if cutoff is None else cutoff
    out = ws.clone()
    out[:, :cutoff] = w_avg.to(ws.dtype).lerp(ws[:, :cutoff], psi)
    return out


# ====================================================================== the residual parameterisation
def soft_clamp(v: Tensor) -> Tensor:
    """CGS-GAN's f(v) = 20 tanh(0.05 v): identity near 0, bounded by +-20."""
    return 20 * torch.tanh(0.05 * v)


def bound_log_scale(log_scale: Tensor, config: GeneratorConfig, anchor: bool) -> Tensor:
    """Clamp to [-8, 0]; anchors first go through the softplus floor of `anchor_floor_pixels`.

    The floor comes before the clamp so that it, not the clamp, decides: floor + softplus(x - floor)
    is the identity well above the floor, never below it, and its gradient never drops to exactly 0.
    Drawn Gaussians may vanish; an anchor below a pixel takes its whole subtree with it.
    """
    if anchor and config.anchor_floor_pixels > 0:
        floor = math.log(config.anchor_floor_pixels / config.image_resolution)
        log_scale = floor + F.softplus(log_scale - floor)
    return log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)


def decode_level0(d: Params, config: GeneratorConfig, anchor: bool = False) -> Params:
    """Level 0 has no parent: positions near the origin, scales so 256 points tile the unit cube."""
    ones = torch.ones_like(d.quat[..., :1])
    identity = torch.cat([ones, torch.zeros_like(d.quat[..., 1:])], dim=-1)
    mean = torch.tanh(0.1 * d.mean).clamp(-config.position_clamp, config.position_clamp)
    log_scale = bound_log_scale(level0_log_scale(config) - F.softplus(-d.log_scale), config, anchor)
    return Params(mean, log_scale, identity + d.quat, d.color, LEVEL0_OPACITY_LOGIT + d.opacity)


def decode_children(parent: Params, d: Params, config: GeneratorConfig, anchor: bool = False) -> Params:
    """Children (parent repeated up_ratio times, parent-major) from the head outputs d.

        mean = mean_a + R(q_a) diag(exp(s_a)) tanh(d_mean)   the child stays in its parent's box
        s    = clamp(s_a' - softplus(-d_s), -8, 0)           strictly smaller than s_a'
        s_a' = s_a - log(rho) while the parent is larger than a pixel (max exp(s_a) > 1/R_img)
        q, colour, opacity: plain residuals of the parent's.

    An anchor (anchor=True) also keeps s above `anchor_floor_pixels` when that is set (bound_log_scale).
    """
    parent = Params(*(t.repeat_interleave(config.up_ratio, dim=1) for t in parent))
    offset_in_parent_frame = parent.log_scale.exp() * torch.tanh(d.mean)  # [B, N, 3]
    offset = (quat_to_rotmat(parent.quat) @ offset_in_parent_frame.unsqueeze(-1)).squeeze(-1)
    mean = (parent.mean + offset).clamp(-config.position_clamp, config.position_clamp)

    larger_than_pixel = parent.log_scale.amax(dim=-1, keepdim=True) > -math.log(config.image_resolution)
    parent_log_scale = parent.log_scale - larger_than_pixel * math.log(config.split_ratio)
    log_scale = bound_log_scale(parent_log_scale - F.softplus(-d.log_scale), config, anchor)

    return Params(mean, log_scale, parent.quat + d.quat, parent.color + d.color, parent.opacity + d.opacity)


class GaussianHead(nn.Module):
    """Tokens -> residuals (d_mean 3, d_log_scale 3, d_quat 4, d_colour 3, d_opacity 1).

    With a view embedding, only the colour sees it, so geometry stays view-independent.
    """

    def __init__(self, channels: int, view_embed_dim: int = 0, soft_clamp: bool = False):
        super().__init__()
        self.geometry = EqualLinear(channels, 11)
        self.color = EqualLinear(channels, 3)
        # Linear(concat(token, view)) split in two, so the view term is computed once per scene
        # instead of concatenating it to every one of up to 262,144 tokens.
        self.color_view = EqualLinear(view_embed_dim, 3, bias=False) if view_embed_dim else None
        self.soft_clamp = soft_clamp
        with torch.no_grad():  # GSGAN's initial gains: 0.1 for log-scale and rotation, 1 for the rest
            self.geometry.weight[3:10].mul_(0.1)

    def forward(self, x: Tensor, view_embedding: Tensor | None = None) -> Params:
        d_mean, d_log_scale, d_quat, d_opacity = self.geometry(x).split([3, 3, 4, 1], dim=-1)
        d_color = self.color(x)
        if self.color_view is not None and view_embedding is not None:
            d_color = d_color + self.color_view(view_embedding).unsqueeze(1)
        if self.soft_clamp:
            d_log_scale, d_quat, d_color, d_opacity = map(soft_clamp, (d_log_scale, d_quat, d_color, d_opacity))
        return Params(d_mean, d_log_scale, d_quat, d_color, d_opacity)


# ====================================================================== synthesis network
class PointEncoder(nn.Module):
    """Learnable points -> tokens: random Fourier features of xyz next to a learnable table.

    The points (RMS radius 0.5, through tanh) are only input features; level-0 positions are predicted.
    """

    def __init__(self, num_points: int, channels: int):
        super().__init__()
        self.points = nn.Parameter(torch.randn(num_points, 3) * (0.5 / math.sqrt(3)))
        self.fourier = nn.Linear(3, channels // 2)
        nn.init.normal_(self.fourier.weight, std=math.pi)
        self.table = nn.Parameter(torch.randn(num_points, channels - channels // 2) * 0.1)

    def forward(self, batch_size: int) -> Tensor:  # -> [B, num_points, C]
        tokens = torch.cat([torch.sin(self.fourier(torch.tanh(self.points))), self.table], dim=-1)
        return tokens.unsqueeze(0).expand(batch_size, -1, -1)


class Level(nn.Module):
    """One hierarchy level: its blocks (a transformer at level 0), its upsampler (levels >= 1), its heads."""

    def __init__(self, config: GeneratorConfig, level: int):
        super().__init__()
        c_in, c_out = config.channels[max(level - 1, 0)], config.channels[level]
        w_dim = config.w_dim if config.modulated[level] else None
        depth = config.level0_layers if level == 0 else 1
        self.blocks = nn.ModuleList(
            Block(c_in, config.attention[level], w_dim, config.num_heads, config.knn_k, config.mlp_ratio)
            for _ in range(depth)
        )
        self.upsample = Upsample(c_in, c_out, config.up_ratio) if level > 0 else None
        is_last = level == config.num_levels - 1
        self.anchor_head = None if is_last else GaussianHead(c_out, soft_clamp=config.soft_clamp)
        view_dim = config.view_embed_dim if config.view_dependent_color else 0
        self.render_head = GaussianHead(c_out, view_dim, soft_clamp=config.soft_clamp)

    def forward(self, tokens: Tensor, ws: Tensor | None) -> Tensor:  # ws [B, 2*depth, w_dim] or None
        for i, block in enumerate(self.blocks):
            w1, w2 = (None, None) if ws is None else (ws[:, 2 * i], ws[:, 2 * i + 1])
            tokens = block(tokens, w1, w2)
        return tokens if self.upsample is None else self.upsample(tokens)


class Background(nn.Module):
    """GSGAN's background: learnable directions -> one w-modulated MLP block -> x4 -> Gaussians on a sphere."""

    def __init__(self, config: GeneratorConfig, channels: int = 128):
        super().__init__()
        self.radius = config.background_radius
        self.up_ratio = config.up_ratio
        self.encoder = PointEncoder(config.background_points, channels)
        with torch.no_grad():
            self.encoder.points.copy_(F.normalize(torch.randn(config.background_points, 3), dim=-1))
        self.norm = Norm(channels, config.w_dim)
        self.mlp = nn.Sequential(EqualLinear(channels, 2 * channels), nn.GELU(), EqualLinear(2 * channels, channels))
        self.layer_scale = LayerScale(channels, config.w_dim)
        self.upsample = Upsample(channels, channels, config.up_ratio)
        self.head = GaussianHead(channels, soft_clamp=config.soft_clamp)
        # Each of the N Gaussians covers about 1/N of the sphere's area: that sets its base size.
        num = config.background_points * config.up_ratio
        self.base_log_scale = math.log(1.5 * math.sqrt(4 * math.pi * self.radius**2 / num))

    def forward(self, w: Tensor) -> Params:  # w [B, w_dim]
        tokens = self.encoder(w.shape[0])
        tokens = tokens + self.mlp(self.norm(tokens, w)) * self.layer_scale(w)
        d = self.head(self.upsample(tokens))
        directions = F.normalize(self.encoder.points, dim=-1).repeat_interleave(self.up_ratio, dim=0)
        mean = self.radius * F.normalize(directions + 0.05 * torch.tanh(d.mean), dim=-1)
        log_scale = (self.base_log_scale - F.softplus(-d.log_scale)).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        identity = torch.zeros_like(d.quat)
        identity[..., 0] = 1
        return Params(mean, log_scale, identity + d.quat, d.color, d.opacity + 2.0)


class Generator(nn.Module):
    """z -> ws (`mapping`), ws -> Gaussians (`synthesize`); `forward` does both."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        self.encoder = PointEncoder(config.num_points, config.channels[0])
        self.levels = nn.ModuleList(Level(config, level) for level in range(config.num_levels))
        self.background = Background(config) if config.background else None
        if config.view_dependent_color:
            self.view_embed = nn.Linear(3, config.view_embed_dim)
            nn.init.normal_(self.view_embed.weight, std=math.pi)
        self._hierarchy_cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def forward(
        self,
        z: Tensor,  # [B, z_dim]
        c: Tensor | None = None,  # [B, c_dim] when the mapping is pose-conditioned
        psi: float = 1.0,
        cutoff: int | None = None,
        view_dirs: Tensor | None = None,  # [B, 3]
    ) -> Gaussians:
        return self.synthesize(self.mapping(z, c, psi, cutoff), view_dirs)

    def synthesize(
        self,
        ws: Tensor,  # [B, num_ws, w_dim]; rows per level given by config.w_slices()
        view_dirs: Tensor | None = None,  # [B, 3] unit camera forward vectors (view-dependent colour)
        return_anchors: bool = False,
    ) -> Gaussians | tuple[Gaussians, list[Params]]:
        config, slices = self.config, self.config.w_slices()
        B = ws.shape[0]
        if ws.shape[1:] != (config.num_ws, config.w_dim):
            raise ValueError(f"ws must be [B, {config.num_ws}, {config.w_dim}], got {tuple(ws.shape)}")
        view_embedding = None
        if config.view_dependent_color:
            if view_dirs is None:
                view_dirs = ws.new_tensor(FRONTAL_VIEW_DIR).expand(B, 3)
            view_embedding = torch.sin(self.view_embed(view_dirs))

        tokens = self.encoder(B)
        anchors: list[Params] = []
        rendered: list[Params] = []
        for level, module in enumerate(self.levels):
            tokens = module(tokens, ws[:, slices[level]] if config.modulated[level] else None)
            parent = anchors[-1] if level > 0 else None

            def decode(d: Params, anchor: bool) -> Params:
                if parent is None:
                    return decode_level0(d, config, anchor)
                return decode_children(parent, d, config, anchor)

            rendered.append(decode(module.render_head(tokens, view_embedding), anchor=False))
            if module.anchor_head is not None:
                anchors.append(decode(module.anchor_head(tokens), anchor=True))
        if self.background is not None:
            rendered.append(self.background(ws[:, slices["background"]].squeeze(1)))

        gaussians = concat_gaussians(rendered, *self.hierarchy(ws.device))
        return (gaussians, anchors) if return_anchors else gaussians

    def layer_scale_parameters(self) -> list[nn.Parameter]:
        """The parameters of every residual branch's layerscale (zero at initialisation)."""
        return [p for m in self.modules() if isinstance(m, LayerScale) for p in m.parameters()]

    def hierarchy(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """level [N] and parent [N] of this generator's output (cached per device)."""
        if device not in self._hierarchy_cache:
            self._hierarchy_cache[device] = tuple(t.to(device) for t in hierarchy_indices(self.config))
        return self._hierarchy_cache[device]


# ====================================================================== functional entry points
def z_from_seeds(seeds: Sequence[int], z_dim: int, device: torch.device | str = "cpu") -> Tensor:
    """[len(seeds), z_dim] latents; the same seed gives the same z on every machine (StyleGAN's rule)."""
    z = np.stack([np.random.RandomState(int(seed)).randn(z_dim) for seed in seeds])
    return torch.from_numpy(z).float().to(device)


def generate(
    generator: Generator,
    z: Tensor,  # [B, z_dim]
    c: Tensor | None = None,  # [B, c_dim] camera labels if the mapping is pose-conditioned
    psi: float = 1.0,  # truncation strength: 1 = none, 0 = the average w
    cutoff: int | None = None,  # truncate only ws rows [0, cutoff)
    view_dirs: Tensor | None = None,  # [B, 3] for view-dependent colour (default: frontal)
) -> Gaussians:  # means [B, N, 3], ...
    """z -> Gaussians in one call; for W-space edits call generator.mapping and generator.synthesize."""
    return generator(z, c, psi, cutoff, view_dirs)


def randomize_layer_scales(generator: nn.Module, std: float = 0.3) -> nn.Module:
    """Random (non-zero) layerscales, in place, using torch's global RNG; either architecture.

    The reference initialises every layerscale to zero, so an untrained generator ignores w:
    every seed gives the same scene. Tests, demos and benchmarks of an untrained model call this
    so that latents matter and every block does its share of the work, as after training.
    """
    with torch.no_grad():
        for p in generator.layer_scale_parameters():
            p.normal_(0, std)
    return generator


def modulate_state_dict(state: dict[str, Tensor], old: GeneratorConfig, new: GeneratorConfig) -> dict[str, Tensor]:
    """A generator state dict of config `old` as one of config `new`, which w-modulates more levels.

    Widening a trained generator: each newly modulated Norm gets affine weight 0 and bias
    (gamma - 1, beta), each newly modulated LayerScale to_scale weight 0 and bias = its scale, so the
    new generator draws exactly what the old one did until training moves the new weights. Every
    other tensor is kept. ConfigError if the configs differ in anything else or un-modulate a level.
    """
    if dataclasses.replace(old, modulated=new.modulated) != new:
        raise ConfigError("modulate_state_dict: the two generator configs may differ only in `modulated`")
    out = dict(state)
    for level, (was, now) in enumerate(zip(old.modulated, new.modulated)):
        if was and not now:
            raise ConfigError(f"level {level} is w-modulated in the saved generator: it cannot become plain")
        if was or not now:
            continue
        for block in range(old.level0_layers if level == 0 else 1):
            prefix = f"levels.{level}.blocks.{block}."
            for norm in ("norm1", "norm2"):
                gamma, beta = out.pop(f"{prefix}{norm}.gamma"), out.pop(f"{prefix}{norm}.beta")
                out[f"{prefix}{norm}.affine.weight"] = gamma.new_zeros(2 * gamma.numel(), new.w_dim)
                out[f"{prefix}{norm}.affine.bias"] = torch.cat([gamma - 1, beta])  # EqualLinear's bias gain is 1
            for scale in ("ls1", "ls2"):
                value = out.pop(f"{prefix}{scale}.scale")
                out[f"{prefix}{scale}.to_scale.weight"] = value.new_zeros(value.numel(), new.w_dim)
                out[f"{prefix}{scale}.to_scale.bias"] = value
    return out


def interpolate_ws(ws_a: Tensor, ws_b: Tensor, t: float) -> Tensor:
    """Linear interpolation in W space: t = 0 gives ws_a, t = 1 gives ws_b."""
    return ws_a.lerp(ws_b, t)


def mix_levels(ws_a: Tensor, ws_b: Tensor, take_b: Sequence[bool], config: GeneratorConfig) -> Tensor:
    """Style mixing per hierarchy level: level l's rows come from ws_b where take_b[l] is true.

    take_b has one entry per level, then optionally one for the background. Unmodulated levels
    (3+ in the reference) consume no w, so their entry changes nothing.
    """
    slices = config.w_slices()
    keys: list[int | str] = list(range(config.num_levels)) + (["background"] if config.background else [])
    if len(take_b) > len(keys):
        raise ValueError(f"take_b has {len(take_b)} entries; this generator has {len(keys)} mixable parts")
    out = ws_a.clone()
    for key, use_b in zip(keys, take_b):
        if use_b:
            out[:, slices[key]] = ws_b[:, slices[key]]
    return out
