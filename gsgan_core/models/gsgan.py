"""GSGAN's generator as the official network computes it (Hyun & Heo, NeurIPS 2024), top to bottom.

    z, c ──mapping──> ws [B, 17, 512]  (12 for level 0's transformer, 2 each for levels 1-2, 1 background)
                       │
    256 learnable points ─tanh─> Fourier + constant features ─> level 0: 6-layer transformer ─> heads
      level 1-2: kNN edge block (AdaIN, w layerscale) ─> x4 sub-pixel upsample ─> AdaMLP ─> heads
      level 3+:  sibling edge block (no norm, plain layerscale) ─> x4 upsample ─> MLP ─> heads
    2,000 learnable directions ─> w-modulated MLP ─> x4 ─> 2,000 + 8,000 background Gaussians, radius 3

Each level has an anchor head (the parents of the next level) and a render head (the Gaussians
drawn; its colour sees a 32-d embedding of the camera's viewing direction). Both are residuals of
the parent anchor: a child lies in its parent's box, is smaller than its parent while the parent
spans more than a pixel, and inherits rotation, colour and opacity (`decode_children`).

Everything here reproduces the official computation, including its quirks:
- parameter names and shapes are the official state dict's, so a snapshot's weights load one to one;
- from `fp16_from_level` on, the official code casts each level's tokens to float16 (even when
  mixed precision is off), which rounds them and runs the sibling block in half precision;
  `fp16_casts=True` (what imported models use) does the same, False keeps float32 throughout;
- the kNN uses squared distances computed as in the official code, so neighbours tie-break alike.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsgan_core.errors import ConfigError
from gsgan_core.gaussians import Gaussians, quat_to_rotmat
from gsgan_core.models.hierarchy import FRONTAL_VIEW_DIR, Params, concat_gaussians, hierarchy_indices, w_slices

SQRT2 = math.sqrt(2)


# ====================================================================== configuration
LOG_SCALE_LIMIT = 20.0  # e^20 world units is far beyond any scene; beyond it exp() overflows float32


@dataclass(frozen=True)
class GSGANConfig:
    """The official generator's settings; the defaults are FFHQ 256 (train.py, --cfg=ffhq)."""

    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25  # the mapping sees the 25-value camera label (generator pose conditioning)
    c_scale: float = 1.0  # the label is multiplied by this before the mapping
    c_zero: bool = False  # condition the mapping on zeros instead (official --gen_pose_cond=False)
    mapping_layers: int = 2
    w_avg_beta: float = 0.998

    num_points: int = 256  # learnable input points = level-0 Gaussians
    channels: tuple[int, ...] = (512, 512, 256, 128, 128)  # each level's output width; level 0 runs at channels[0]
    transformer_layers: int = 6
    num_heads: int = 8
    knn_k: int = 16
    up_ratio: int = 4
    start_pe: bool = True  # level-0 tokens from Fourier + constant features (else one linear layer)
    pe_res: int = 512  # width of the constant feature table
    view_embed_dim: int = 32

    image_resolution: int = 256  # training images; the split threshold is one pixel of it
    scale_init: float = math.log(1 / 16)  # log(1 / sqrt(num_points))
    scale_threshold: float = math.log(1 / 16)
    xyz_output_scale: float = 0.1
    fp16_from_level: int = 1  # official: 2^(log2(4 * 2^levels) - 4), i.e. level 1 at 256 px, level 2 at 512
    fp16_casts: bool = True

    background_points: int = 2000
    background_channels: int = 128
    background_radius: float = 3.0
    background_scale_init: float = -2.0
    background_scale_threshold: float = -2.0

    architecture = "gsgan"  # class constants, not fields
    camera_model = "gsgan"
    background = True
    view_dependent_color = True

    def __post_init__(self):
        if len(self.channels) < 2:
            raise ConfigError("channels: GSGAN needs at least two levels")
        for name in ("z_dim", "w_dim", "mapping_layers", "num_points", "transformer_layers", "num_heads", "knn_k",
                     "pe_res", "view_embed_dim", "image_resolution", "background_points", "background_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.c_dim < 0 or any(c < 1 for c in self.channels):
            raise ConfigError(f"c_dim must be >= 0 and channels >= 1, got {self.c_dim} and {self.channels}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        for name in ("scale_init", "scale_threshold", "background_scale_init", "background_scale_threshold"):
            if abs(getattr(self, name)) > LOG_SCALE_LIMIT:  # log-scales: exp() of them must stay a float
                raise ConfigError(f"{name} is a log-scale and must be within +-{LOG_SCALE_LIMIT}, got {getattr(self, name)}")
        if not 0 <= self.w_avg_beta <= 1 or not self.background_radius > 0:
            raise ConfigError(f"w_avg_beta must be in [0, 1] and background_radius positive, got "
                              f"{self.w_avg_beta} and {self.background_radius}")
        if self.knn_k >= self.num_points:
            raise ConfigError(f"knn_k={self.knn_k} needs more than {self.knn_k} level-0 points, got num_points={self.num_points}")
        if self.channels[0] % self.num_heads or self.channels[0] % 2:
            raise ConfigError(f"channels[0]={self.channels[0]} must be even and divisible by num_heads={self.num_heads}")
        if any(c % 2 for c in self.channels):
            raise ConfigError(f"channels must be even (the edge blocks halve them): {self.channels}")
        if self.up_ratio != 4:
            raise ConfigError("up_ratio: the official sibling block groups exactly 4 children")

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_levels(self) -> int:
        return len(self.channels)

    @property
    def modulated(self) -> tuple[bool, ...]:
        """Which levels take w: level 0 (transformer) and the two kNN levels."""
        return tuple(level <= 2 for level in range(self.num_levels))

    @property
    def split_ratio(self) -> float:
        """rho: from the level-0 scale to one pixel in (num_levels - 1) equal steps (2 in every official config)."""
        return math.exp((self.scale_init - self.scale_end) / (self.num_levels - 1))

    @property
    def scale_end(self) -> float:
        return math.log(1 / self.image_resolution)

    def gaussians_at_level(self, level: int) -> int:
        return self.num_points * self.up_ratio**level

    @property
    def num_foreground_gaussians(self) -> int:
        return sum(self.gaussians_at_level(level) for level in range(self.num_levels))

    @property
    def num_background_gaussians(self) -> int:
        return self.background_points * (1 + self.up_ratio)

    @property
    def num_gaussians(self) -> int:
        return self.num_foreground_gaussians + self.num_background_gaussians

    @property
    def ws_per_level(self) -> tuple[int, ...]:
        return tuple(2 * self.transformer_layers if level == 0 else 2 * modulated
                     for level, modulated in enumerate(self.modulated))

    @property
    def num_ws(self) -> int:
        return sum(self.ws_per_level) + 1

    def w_slices(self) -> dict[int | str, slice]:
        return w_slices(self.ws_per_level, background=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GSGANConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown GSGAN config keys: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def official_config(levels: int, resolution: int, **overrides) -> GSGANConfig:
    """The configuration the official train.py builds: 256 points, `levels` levels, images of `resolution`."""
    widths = (512, 512, 256, 128, 128, 128)[:levels]
    fp16_from = max(1, levels - 4)  # the first level at or above 2^(log2(res_end) - 4), res_end = 4 * 2^levels
    return GSGANConfig(channels=widths, image_resolution=resolution, fp16_from_level=fp16_from, **overrides)


# ====================================================================== layers (official arithmetic)
def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2


class FullyConnected(nn.Module):
    """StyleGAN2's equalised linear layer on [..., in] tokens; weight cast before its gain, as officially."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear", lr_mul: float = 1.0,
                 bias_init: float = 0.0, weight_init: float = 1.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * (weight_init / lr_mul))
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: Tensor) -> Tensor:  # [..., in] -> [..., out]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        flat = x.reshape(-1, x.shape[-1])
        if self.activation == "linear":
            out = torch.addmm(b.unsqueeze(0), flat, w.t())
        else:
            out = _lrelu(flat.matmul(w.t()) + b)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class Conv1x1(nn.Module):
    """A 1x1 convolution over [B, C, N, k] edge features (StyleGAN2's Conv2dLayer with kernel 1)."""

    def __init__(self, in_channels: int, out_channels: int, activation: str = "linear"):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, (self.weight * self.weight_gain).to(x.dtype))
        x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return _lrelu(x) if self.activation == "lrelu" else x


def instance_norm(x: Tensor) -> Tensor:  # [B, N, C] normalised over the points N, in float32
    dtype, x = x.dtype, x.float()
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True, unbiased=False) + 1e-8)
    return x.to(dtype)


class AdaptiveNorm(nn.Module):
    """AdaIN over points: norm(x) * gamma(w) + beta(w), gamma biased to 1."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.gamma = FullyConnected(w_dim, channels, bias_init=1.0)
        self.beta = FullyConnected(w_dim, channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:  # x [B, N, C], w [B, w_dim]
        return instance_norm(x) * self.gamma(w).unsqueeze(1) + self.beta(w).unsqueeze(1)


class MLP(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.c_fc = FullyConnected(channels, 4 * channels)
        self.c_proj = FullyConnected(4 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)) * SQRT2)


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = FullyConnected(channels, 3 * channels)
        self.c_proj = FullyConnected(channels, channels)

    def forward(self, x: Tensor) -> Tensor:  # [B, N, C]
        B, N, C = x.shape
        # Each head's slice of the qkv projection holds its q, k and v one after the other.
        q, k, v = self.c_qkv(x).view(B, N, self.heads, 3, -1).unbind(3)  # each [B, N, H, D]
        scale = q.shape[-1] ** -0.25  # on q and k both: steadier in float16 than dividing the product
        weights = torch.einsum("bthc,bshc->bhts", q * scale, k * scale)
        weights = torch.softmax(weights.float(), dim=-1).to(weights.dtype)
        return self.c_proj(torch.einsum("bhts,bshc->bthc", weights, v).reshape(B, N, C))


class TransformerBlock(nn.Module):
    """x += attn(AdaIN(x, w0)) * ls(w0);  x += mlp(AdaIN(x, w1)) * ls(w1)."""

    def __init__(self, channels: int, heads: int, w_dim: int):
        super().__init__()
        self.attn = Attention(channels, heads)
        self.mlp = MLP(channels)
        self.ln_1 = AdaptiveNorm(channels, w_dim)
        self.ln_2 = AdaptiveNorm(channels, w_dim)
        self.ls_1 = FullyConnected(w_dim, channels, weight_init=0.0)
        self.ls_2 = FullyConnected(w_dim, channels, weight_init=0.0)

    def forward(self, x: Tensor, w0: Tensor, w1: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x, w0)) * self.ls_1(w0).unsqueeze(1)
        return x + self.mlp(self.ln_2(x, w1)) * self.ls_2(w1).unsqueeze(1)


class Transformer(nn.Module):
    def __init__(self, channels: int, layers: int, heads: int, w_dim: int):
        super().__init__()
        self.resblocks = nn.ModuleList(TransformerBlock(channels, heads, w_dim) for _ in range(layers))

    def forward(self, x: Tensor, ws: Tensor) -> Tensor:  # ws [B, 2 * layers, w_dim]
        for i, block in enumerate(self.resblocks):
            x = block(x, ws[:, 2 * i], ws[:, 2 * i + 1])
        return x


def edge_aggregate(conv_w: nn.Module, conv_x: nn.Module, center: Tensor, delta: Tensor) -> Tensor:
    """SP-GAN's edge convolution: center, delta [B, C, N, k] -> [B, C, N].

    Per channel, a softmax over the k neighbours (weights from the deltas alone) averages an
    MLP of (center, delta).
    """
    edges = torch.cat([center, delta], dim=1)  # [B, 2C, N, k]
    weights = torch.softmax(conv_w(edges[:, center.shape[1]:]).float(), dim=-1).to(edges.dtype)
    return (conv_x(edges) * weights).sum(-1)


def _edge_convs(channels: int) -> tuple[nn.Sequential, nn.Sequential]:
    conv_w = nn.Sequential(Conv1x1(channels, channels // 2, "lrelu"), Conv1x1(channels // 2, channels))
    conv_x = nn.Sequential(Conv1x1(2 * channels, channels, "lrelu"), Conv1x1(channels, channels))
    return conv_w, conv_x


class KnnEdgeBlock(nn.Module):
    """Levels 1-2: AdaIN, then an edge convolution over the k nearest tokens in feature space
    (self excluded), scaled by a w-dependent layerscale: x + edge(AdaIN(x, w)) * ls(w)."""

    def __init__(self, channels: int, k: int, w_dim: int):
        super().__init__()
        self.k = k
        self.norm = AdaptiveNorm(channels, w_dim)
        self.conv_w, self.conv_x = _edge_convs(channels)
        self.ls = FullyConnected(w_dim, channels, weight_init=0.0)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:  # [B, N, C]
        h = self.norm(x, w).transpose(1, 2)  # [B, C, N]
        B, C, N = h.shape
        with torch.no_grad():
            # |a|^2 + |b|^2 - 2 a.b in the official order, so that near-ties resolve alike.
            ht = h.transpose(1, 2)
            sq = ht.square().sum(dim=2, keepdim=True)
            distance = -2 * torch.bmm(ht, h) + sq + sq.transpose(1, 2)  # [B, N, N]
            neighbours = torch.sort(distance, dim=2).indices[:, :, 1:self.k + 1]  # [B, N, k]
        gathered = torch.gather(h.unsqueeze(2).expand(B, C, N, N), 3, neighbours.unsqueeze(1).expand(B, C, N, self.k))
        center = h.unsqueeze(3).expand(B, C, N, self.k)
        out = edge_aggregate(self.conv_w, self.conv_x, center, gathered - center)
        return out.transpose(1, 2) * self.ls(w).unsqueeze(1) + x


class SiblingEdgeBlock(nn.Module):
    """Levels 3+: the edge convolution among the 4 children of one parent (self included),
    no normalisation, a learnable per-channel layerscale."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_w, self.conv_x = _edge_convs(channels)
        self.ls = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, w: Tensor | None = None) -> Tensor:  # [B, N, C]
        B, N, C = x.shape
        groups = x.reshape(B, N // 4, 4, C)
        center = groups.unsqueeze(3).expand(B, N // 4, 4, 4, C)  # [b, g, i, j] = x_i
        delta = groups.unsqueeze(2) - groups.unsqueeze(3)  # [b, g, i, j] = x_j - x_i
        to_channels_first = lambda t: t.reshape(B, N, 4, C).permute(0, 3, 1, 2)  # noqa: E731
        out = edge_aggregate(self.conv_w, self.conv_x, to_channels_first(center), to_channels_first(delta))
        return out.transpose(1, 2) * self.ls + x


class Upsample(nn.Module):
    """Sub-pixel x4: each token becomes 4 children, (res_fc(x) + subpixel(x)) / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, ratio: int = 4):
        super().__init__()
        self.ratio, self.out_channels = ratio, out_channels
        self.subpixel = FullyConnected(in_channels, out_channels * ratio, activation="lrelu")
        self.res_fc = FullyConnected(in_channels, out_channels) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # [B, N, C_in] -> [B, N * ratio, C_out]
        B, N, _ = x.shape
        children = self.subpixel(x).reshape(B, N * self.ratio, self.out_channels)
        return (self.res_fc(x).repeat_interleave(self.ratio, dim=1) + children) / SQRT2


class AdaMLP(nn.Module):
    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.norm = AdaptiveNorm(channels, w_dim)
        self.mlp = MLP(channels)
        self.ls = FullyConnected(w_dim, channels, weight_init=0.0)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x, w)) * self.ls(w).unsqueeze(1)


class PlainMLP(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.mlp = MLP(channels)
        self.ls = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, w: Tensor | None = None) -> Tensor:
        return x + self.mlp(x) * self.ls


class FourierFeatures(nn.Module):
    """sin(Linear(xyz)), SIREN-style uniform initialisation."""

    def __init__(self, channels: int):
        super().__init__()
        self.linear = nn.Linear(3, channels)
        bound = math.sqrt(9 / 3)
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def forward(self, xyz: Tensor) -> Tensor:
        return torch.sin(self.linear(xyz))


class LFF(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.ffm = FourierFeatures(channels)

    def forward(self, xyz: Tensor) -> Tensor:
        return self.ffm(xyz)


class ConstantFeatures(nn.Module):
    """A learnable table per axis [3, C, 1, R], sampled bilinearly at (x = 0, y = coordinate) and summed.

    The official sampling places the coordinate on the table's height-1 axis, so each feature is
    the table's two middle columns blended and faded by (1 - |coordinate| / 2): reproduced as is.
    """

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        self.const_pe = nn.Parameter(torch.randn(3, channels, 1, resolution))

    def forward(self, xyz: Tensor) -> Tensor:  # [B, L, 3] -> [B, L, C]
        B, L, _ = xyz.shape
        coords = xyz.permute(0, 2, 1).reshape(3 * B, 1, L, 1)
        grid = torch.cat([torch.zeros_like(coords), coords], dim=-1)  # (x, y) per sample
        table = self.const_pe.repeat(B, 1, 1, 1)  # [3B, C, 1, R]
        sampled = F.grid_sample(table, grid, mode="bilinear", align_corners=False)  # [3B, C, 1, L]
        C = table.shape[1]
        return sampled.reshape(B, 3, C, L).sum(1).permute(0, 2, 1) / math.sqrt(3)


class PointFeatures(nn.Module):
    """Level-0 input tokens: [Fourier features | constant features] of the tanh'ed learnable points."""

    def __init__(self, channels: int, pe_res: int):
        super().__init__()
        self.learnable_pe = LFF(channels // 2)
        self.const_pe = ConstantFeatures(channels // 2, pe_res)

    def forward(self, xyz: Tensor) -> Tensor:
        return torch.cat([self.learnable_pe(xyz), self.const_pe(xyz)], dim=-1)


# ====================================================================== the residual parameterisation
PARAM_DIMS = {"xyz": 3, "scale": 3, "rotation": 4, "color": 3, "opacity": 1}
HEAD_WEIGHT_INIT = {"xyz": 1.0, "scale": 0.1, "rotation": 0.1, "color": 1.0, "opacity": 1.0}


def soft_max_bound(x: Tensor, bound) -> Tensor:
    """bound - softplus(bound - x): x well below the bound, never above it."""
    return -F.softplus(-(x - bound)) + bound


def offset_in_box(parent: Params, d_mean: Tensor) -> Tensor:
    """parent.mean + R(q) diag(exp(s)) tanh(d_mean): a point in the parent's box, in its frame."""
    frame = quat_to_rotmat(parent.quat) * parent.log_scale.exp().unsqueeze(-2)  # [B, N, 3, 3]
    return (frame @ torch.tanh(d_mean).unsqueeze(-1)).squeeze(-1) + parent.mean


def decode_children(parent: Params, d: Params, split_ratio: float, split_above: float, min_log_scale: float) -> Params:
    """Children from their (already repeated) parents and the head outputs d.

        mean  = parent box point (offset_in_box)
        scale = clamp(s' - softplus(-d_s), min_log_scale, 0),  s' = s_a - log(rho) if max exp(s_a) > split_above
        quat, colour, opacity: plain residuals.
    """
    split = (parent.log_scale.exp().amax(-1, keepdim=True) > split_above).to(parent.log_scale.dtype)
    split_log_scale = torch.log(parent.log_scale.exp() / split_ratio).clamp(-100, 0)
    log_scale = parent.log_scale * (1.0 - split) + split_log_scale * split
    log_scale = (log_scale - F.softplus(-d.log_scale)).clamp(min_log_scale, 0)
    return Params(offset_in_box(parent, d.mean), log_scale, parent.quat + d.quat,
                  parent.color + d.color, parent.opacity + d.opacity)


def repeat_params(p: Params, ratio: int) -> Params:
    return Params(*(t.repeat_interleave(ratio, dim=1) for t in p))


def head_outputs(out_layers: nn.ModuleDict, block: str, index: int, x: Tensor, view: Tensor | None = None) -> Params:
    """The anchor (index 0) or render (index 1) head of a level; the render colour also sees the view."""
    outputs = []
    for key in PARAM_DIMS:
        layer = out_layers[key][block][index]
        if key == "color" and view is not None:
            # Linear(concat(x, view)) split in two: the view term is computed once per scene, not per token.
            C = x.shape[-1]
            view_term = F.linear(view, layer.weight[:, C:] * layer.weight_gain, layer.bias * layer.bias_gain)
            outputs.append(F.linear(x, layer.weight[:, :C] * layer.weight_gain) + view_term.unsqueeze(1))
        else:
            outputs.append(layer(x))
    return Params(*outputs)


# ====================================================================== point generator (the foreground)
class PointGenerator(nn.Module):
    def __init__(self, config: GSGANConfig):
        super().__init__()
        self.config = config
        widths = config.channels
        c0 = widths[0]
        self.conv_in = PointFeatures(c0, config.pe_res) if config.start_pe else FullyConnected(3, c0)
        self.blocks = nn.ModuleDict()
        self.out_layers = nn.ModuleDict({key: nn.ModuleDict() for key in PARAM_DIMS})
        self.encoder_camera_cond = FullyConnected(3, config.view_embed_dim, activation="lrelu")
        # Present in the official network but unused by its forward; kept so its weights load 1:1.
        self.camera_dep_affine = FullyConnected(config.view_embed_dim, c0, bias_init=1.0)
        for level in range(config.num_levels):
            c_in, c_out = widths[max(level - 1, 0)], widths[level]
            if level == 0:
                blocks = [Transformer(c0, config.transformer_layers, config.num_heads, config.w_dim)]
            elif config.modulated[level]:
                blocks = [KnnEdgeBlock(c_in, config.knn_k, config.w_dim), Upsample(c_in, c_out, config.up_ratio),
                          AdaMLP(c_out, config.w_dim)]
            else:
                blocks = [SiblingEdgeBlock(c_in), Upsample(c_in, c_out, config.up_ratio), PlainMLP(c_out)]
            self.blocks[self.block_name(level)] = nn.ModuleList(blocks)
            for key, dim in PARAM_DIMS.items():
                render_in = c_out + config.view_embed_dim if key == "color" else c_out
                self.out_layers[key][self.block_name(level)] = nn.ModuleList([
                    FullyConnected(c_out, dim, weight_init=HEAD_WEIGHT_INIT[key]),  # anchor head
                    FullyConnected(render_in, dim, weight_init=HEAD_WEIGHT_INIT[key]),  # render head
                ])
        self.register_buffer("scale_init", torch.full([3], config.scale_init))
        self.register_buffer("scale_threshold", torch.full([3], config.scale_threshold))
        self.register_buffer("rotation_init", torch.tensor([1, 0, 0, 0]))
        self.register_buffer("color_init", torch.zeros(3))
        self.register_buffer("opacity_init", torch.full([1], math.log(0.1 / 0.9)))

    @staticmethod
    def block_name(level: int) -> str:  # the official code keys levels by a nominal resolution 4 * 2^level
        return f"block_{4 * 2 ** level}"

    def forward(
        self,
        xyz: Tensor,  # [B, P, 3] tanh of the learnable points
        ws: Tensor,  # [B, num_ws - 1, w_dim]
        view_dirs: Tensor,  # [B, 3] unit viewing directions
    ) -> tuple[list[Params], list[Params]]:  # rendered Gaussians and anchors, per level
        config, slices = self.config, self.config.w_slices()
        view = self.encoder_camera_cond(view_dirs)
        rendered: list[Params] = []
        anchors: list[Params] = []
        x = self.conv_in(xyz)
        for level in range(config.num_levels):
            name = self.block_name(level)
            blocks = self.blocks[name]
            level_ws = ws[:, slices[level]]
            if level == 0:
                x = blocks[0](x, level_ws)
            else:
                if config.fp16_casts and level >= config.fp16_from_level:
                    x = x.half()
                edge, upsample, mlp = blocks
                x = edge(x, level_ws[:, 0] if config.modulated[level] else None)
                x = upsample(x)
                x = mlp(x, level_ws[:, 1] if config.modulated[level] else None)
            out = x.float()
            is_last = level == config.num_levels - 1
            anchor_d = None if is_last else head_outputs(self.out_layers, name, 0, out)
            render_d = head_outputs(self.out_layers, name, 1, out, view)
            if level == 0:
                anchor, drawn = self._decode_level0(anchor_d, render_d)
            else:
                parent = repeat_params(anchors[-1], config.up_ratio)
                decode = lambda d: decode_children(parent, d, config.split_ratio, math.exp(config.scale_end), -8.0)  # noqa: E731
                anchor = None if is_last else decode(anchor_d)
                drawn = decode(render_d)
            rendered.append(drawn)
            if anchor is not None:
                anchors.append(anchor)
        return rendered, anchors

    def _decode_level0(self, a: Params, r: Params) -> tuple[Params, Params]:
        """Level 0 has no parent: anchors near the origin; drawn Gaussians inside their anchor's box."""
        threshold = self.scale_threshold
        anchor = Params(
            mean=torch.tanh(a.mean * self.config.xyz_output_scale),
            log_scale=soft_max_bound(self.scale_init + a.log_scale, threshold),
            quat=self.rotation_init + a.quat,
            color=self.color_init + a.color,
            opacity=self.opacity_init + a.opacity,
        )
        drawn = Params(
            mean=offset_in_box(anchor, r.mean),
            log_scale=soft_max_bound(self.scale_init + r.log_scale, threshold),
            quat=self.rotation_init + r.quat,
            color=self.color_init + r.color,
            opacity=self.opacity_init + r.opacity,
        )
        return anchor, drawn


# ====================================================================== background
class ModulatedFullyConnected(nn.Module):
    """StyleGAN2's modulated (optionally demodulated) linear layer on [B, L, C], activations clamped to 256.

    residual=True: out * layerscale + res_fc(x).
    """

    def __init__(self, in_features: int, out_features: int, w_dim: int, activation: str = "linear",
                 weight_init: float = 1.0, residual: bool = False):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * weight_init)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = 1 / math.sqrt(in_features)
        self.affine = FullyConnected(w_dim, in_features, bias_init=1.0)
        self.residual = residual
        if residual:
            self.res_fc = FullyConnected(in_features, out_features) if in_features != out_features else nn.Identity()
            self.layerscale = nn.Parameter(torch.full([1, 1, out_features], 1e-2))

    def forward(self, x: Tensor, w: Tensor, demodulate: bool = True) -> Tensor:
        B, L, C = x.shape
        styles = self.affine(w)  # [B, C]
        if demodulate:
            dcoefs = ((self.weight.unsqueeze(0) * styles.unsqueeze(1)).square().sum(2) + 1e-8).rsqrt()  # [B, O]
        else:
            styles = styles * self.weight_gain
        out = (x * styles.unsqueeze(1)).reshape(-1, C).matmul(self.weight.t())
        if demodulate:
            out = out * dcoefs.repeat_interleave(L, dim=0)
        out = out + self.bias
        if self.activation == "lrelu":
            out = _lrelu(out)
        out = out.clamp(-256, 256).reshape(B, L, -1)
        if self.residual:
            out = out * self.layerscale + self.res_fc(x)
        return out


class ModulatedUpsample(nn.Module):
    def __init__(self, channels: int, w_dim: int, ratio: int = 4):
        super().__init__()
        self.ratio = ratio
        self.subpixel = ModulatedFullyConnected(channels, channels * ratio, w_dim, activation="lrelu")

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        B, L, C = x.shape
        children = self.subpixel(x, w).reshape(B, L * self.ratio, C)
        return (x.repeat_interleave(self.ratio, dim=1) + children) / SQRT2


class BackgroundGenerator(nn.Module):
    """Learnable directions -> two w-modulated layers -> Gaussians on a sphere; then x4 children."""

    def __init__(self, config: GSGANConfig):
        super().__init__()
        self.config = config
        C, w_dim = config.background_channels, config.w_dim
        self.conv_in = LFF(C)
        self.network = nn.ModuleDict()
        self.out_layers = nn.ModuleDict()
        head_init = {"xyz": 1.0, "scale": 1e-2, "rotation": 1e-2, "color": 1.0, "opacity": 1.0}
        for i in range(2):
            layers = [ModulatedUpsample(C, w_dim)] if i > 0 else []
            layers += [ModulatedFullyConnected(C, C, w_dim, "lrelu", residual=True) for _ in range(2)]
            self.network[f"block_{i}"] = nn.ModuleList(layers)
            self.out_layers[f"block_{i}"] = nn.ModuleDict({
                key: nn.ModuleDict({"out_block": ModulatedFullyConnected(C, dim, w_dim, weight_init=head_init[key])})
                for key, dim in PARAM_DIMS.items()
            })
        self.register_buffer("scale_init", torch.full([1, 3], config.background_scale_init))
        self.register_buffer("scale_threshold", torch.full([1, 3], config.background_scale_threshold))
        self.register_buffer("rotation_init", torch.tensor([[1, 0, 0, 0]]))
        self.register_buffer("color_init", torch.zeros(1, 3))
        self.register_buffer("opacity_init", torch.full([1, 1], math.log(0.1 / 0.9)))

    def _heads(self, block: str, x: Tensor, w: Tensor) -> Params:
        outs = self.out_layers[block]
        return Params(*(outs[key]["out_block"](x, w, demodulate=False) for key in PARAM_DIMS))

    def forward(self, points: Tensor, w: Tensor) -> list[Params]:  # points [B, P, 3], w [B, w_dim]
        config = self.config
        B, P, _ = points.shape
        x = self.conv_in(points.reshape(-1, 3)).reshape(B, P, -1)
        for layer in self.network["block_0"]:
            x = layer(x, w)
        d = self._heads("block_0", x, w)
        coarse = Params(
            mean=F.normalize(points, dim=-1) * config.background_radius,
            log_scale=soft_max_bound(d.log_scale + self.scale_init, self.scale_threshold),
            quat=d.quat + self.rotation_init,
            color=d.color + self.color_init,
            opacity=d.opacity + self.opacity_init,
        )
        upsample, *layers = self.network["block_1"]
        x = upsample(x, w)
        for layer in layers:
            x = layer(x, w)
        parent = repeat_params(coarse, 4)
        fine = decode_children(parent, self._heads("block_1", x, w), 2 ** (2 / 3), 0.05, -10.0)
        fine = fine._replace(mean=F.normalize(fine.mean, dim=-1) * config.background_radius)
        # The official network projects the concatenated means onto the sphere once more.
        radius = config.background_radius
        return [p._replace(mean=F.normalize(p.mean, dim=-1) * radius) for p in (coarse, fine)]


# ====================================================================== mapping
class MappingNetwork(nn.Module):
    """StyleGAN2's mapping: normalised z next to the normalised embedded camera label -> w, broadcast."""

    def __init__(self, config: GSGANConfig):
        super().__init__()
        self.num_ws, self.w_avg_beta = config.num_ws, config.w_avg_beta
        widths = [config.z_dim + (config.w_dim if config.c_dim else 0)] + [config.w_dim] * config.mapping_layers
        if config.c_dim:
            self.embed = FullyConnected(config.c_dim, config.w_dim)
        for i in range(config.mapping_layers):
            setattr(self, f"fc{i}", FullyConnected(widths[i], widths[i + 1], activation="lrelu", lr_mul=0.01))
        self.mapping_layers = config.mapping_layers
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, z: Tensor, c: Tensor | None) -> Tensor:  # -> [B, w_dim]
        x = _normalize_2nd_moment(z.float())
        if hasattr(self, "embed"):
            x = torch.cat([x, _normalize_2nd_moment(self.embed(c.float()))], dim=1)
        for i in range(self.mapping_layers):
            x = getattr(self, f"fc{i}")(x)
        return x


def _normalize_2nd_moment(x: Tensor) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


# ====================================================================== the generator
class GSGANGenerator(nn.Module):
    """z -> ws (`mapping`), ws -> Gaussians (`synthesize`); the same interface as gsgan's other generator."""

    def __init__(self, config: GSGANConfig):
        super().__init__()
        self.config = config
        points = torch.randn(config.num_points, 3)
        self._xyz = nn.Parameter(points * torch.rsqrt(points.square().mean(1, keepdim=True) + 1e-8) * 0.5)
        self.point_gen = PointGenerator(config)
        points = torch.randn(config.background_points, 3)
        points = torch.cat([points[:, :2], -points[:, 2:].abs()], dim=1)  # the hemisphere behind the head
        self._xyz_bg = nn.Parameter(points * torch.rsqrt(points.square().mean(1, keepdim=True) + 1e-8))
        self.point_gen_bg = BackgroundGenerator(config)
        self.mapping_network = MappingNetwork(config)
        self._hierarchy_cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def mapping(
        self,
        z: Tensor,  # [B, z_dim]
        c: Tensor | None = None,  # [B, 25] camera labels the mapping is conditioned on
        psi: float = 1.0,
        cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> Tensor:  # ws [B, num_ws, w_dim]
        config = self.config
        if config.c_dim:
            if c is None:
                raise ValueError(f"this generator's mapping is conditioned on a {config.c_dim}-value camera label; pass c")
            c = torch.zeros_like(c) if config.c_zero else c * config.c_scale
        w = self.mapping_network(z, c)
        if update_w_avg:
            self.mapping_network.w_avg.copy_(w.detach().mean(0).lerp(self.mapping_network.w_avg, config.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, config.num_ws, 1)
        if psi != 1:
            cutoff = config.num_ws if cutoff is None else cutoff
            ws[:, :cutoff] = self.mapping_network.w_avg.lerp(ws[:, :cutoff], psi)
        return ws

    def forward(self, z: Tensor, c: Tensor | None = None, psi: float = 1.0, cutoff: int | None = None,
                view_dirs: Tensor | None = None) -> Gaussians:
        return self.synthesize(self.mapping(z, c, psi, cutoff), view_dirs)

    def synthesize(
        self,
        ws: Tensor,  # [B, num_ws, w_dim]
        view_dirs: Tensor | None = None,  # [B, 3] camera forward vectors (colour); default frontal
        return_anchors: bool = False,
    ) -> Gaussians | tuple[Gaussians, list[Params]]:
        config = self.config
        B = ws.shape[0]
        if ws.shape[1:] != (config.num_ws, config.w_dim):
            raise ValueError(f"ws must be [B, {config.num_ws}, {config.w_dim}], got {tuple(ws.shape)}")
        if view_dirs is None:
            view_dirs = ws.new_tensor(FRONTAL_VIEW_DIR).expand(B, 3)
        points = torch.tanh(self._xyz).unsqueeze(0).expand(B, -1, -1)
        rendered, anchors = self.point_gen(points, ws[:, :-1], F.normalize(view_dirs, dim=-1))
        rendered = [p._replace(mean=p.mean.clamp(-1, 1)) for p in rendered]
        rendered += self.point_gen_bg(self._xyz_bg.unsqueeze(0).expand(B, -1, -1), ws[:, -1])
        gaussians = concat_gaussians(rendered, *self.hierarchy(ws.device))
        return (gaussians, anchors) if return_anchors else gaussians

    def layer_scale_parameters(self) -> list[nn.Parameter]:
        """The layerscales of the residual branches that start at zero (the w-dependent ones and the
        plain per-channel ones); the background's residual layerscales start at 0.01 and are left out."""
        out = []
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 2)
            if leaf[-1] in ("ls", "ls_1", "ls_2") or (len(leaf) > 1 and leaf[-2] in ("ls", "ls_1", "ls_2")):
                out.append(p)
        return out

    def hierarchy(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """level [N] and parent [N]: child j of level-(l-1) Gaussian i is level-l Gaussian 4 i + j."""
        if device not in self._hierarchy_cache:
            self._hierarchy_cache[device] = tuple(t.to(device) for t in hierarchy_indices(self.config))
        return self._hierarchy_cache[device]
