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

On the CPU without grad (a viewer, `gsgan-render`), `synthesize` runs `_CpuInference`: the same maths
rearranged for a small CPU (folded weights, reused buffers, Numba kernels for the element-wise
stages), equal to the code above within float rounding; `Generator.cpu_inference = False` turns it off.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsgan_core.errors import ConfigError
from gsgan_core.gaussians import Gaussians, quat_to_rotmat
from gsgan_core.models.config import GeneratorConfig, level0_log_scale
from gsgan_core.models.hierarchy import Params, concat_gaussians, hierarchy_indices  # noqa: F401 (re-exported)
from gsgan_core.models.layers import Block, EqualLinear, Norm, LayerScale, Upsample, cpu_kernels

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
        # Without grad on the CPU, `synthesize` takes the inference path (`_CpuInference`, same outputs
        # within float rounding, several times faster); False forces the reference code everywhere.
        self.cpu_inference = True
        self._cpu_plan: _CpuInference | None = None

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

        plan = None if return_anchors else self._inference_plan(ws)
        if plan is not None:
            return plan.synthesize(self, ws, view_embedding)

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

    def __getstate__(self) -> dict:  # copies and pickles leave the precomputed plan behind
        state = self.__dict__.copy()
        state["_cpu_plan"] = None
        return state

    def _inference_plan(self, ws: Tensor) -> "_CpuInference | None":
        """The CPU inference path's precomputed weights, if it applies to this call (no grad, float32
        on the CPU, Numba importable), rebuilt whenever a weight changed; else None."""
        if (not self.cpu_inference or torch.is_grad_enabled() or ws.device.type != "cpu"
                or ws.dtype != torch.float32 or self.encoder.points.dtype != torch.float32):
            return None
        kernels = cpu_kernels()
        if kernels is None:
            return None
        version = _weights_version(self)
        plan = self._cpu_plan
        if plan is None or version is None or plan.version != version:
            plan = _CpuInference(self, kernels, version)
            self._cpu_plan = plan if version is not None else None
        return plan

    def layer_scale_parameters(self) -> list[nn.Parameter]:
        """The parameters of every residual branch's layerscale (zero at initialisation)."""
        return [p for m in self.modules() if isinstance(m, LayerScale) for p in m.parameters()]

    def hierarchy(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """level [N] and parent [N] of this generator's output (cached per device)."""
        if device not in self._hierarchy_cache:
            self._hierarchy_cache[device] = tuple(t.to(device) for t in hierarchy_indices(self.config))
        return self._hierarchy_cache[device]


# ====================================================================== CPU inference path
def _weights_version(module: nn.Module) -> tuple | None:
    """Changes whenever a parameter or buffer is replaced or modified in place (None: cannot tell,
    e.g. for inference tensors, which carry no version counter)."""
    try:
        return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))
    except RuntimeError:
        return None


def _eff(layer: EqualLinear) -> tuple[Tensor, Tensor | None]:
    """(weight, bias) as EqualLinear.forward uses them (the runtime gains applied)."""
    weight = layer.weight * layer.weight_gain
    return weight, None if layer.bias is None else layer.bias * layer.bias_gain


def _addmm(input: Tensor, a: Tensor, weight_t: Tensor, out: Tensor | None = None) -> Tensor:
    """input + a @ weight_t: a [B, N, K], weight_t [K, M] or [B, K, M], input broadcastable to [B, N, M];
    into `out` ([B, N, M], not overlapping the inputs) if given."""
    B, N, K = a.shape
    if B == 1:
        inp = input.reshape(-1, input.shape[-1]) if input.dim() == 3 else input
        if out is None:
            return torch.addmm(inp, a.view(N, K), weight_t.reshape(K, -1)).view(1, N, -1)
        torch.addmm(inp, a.view(N, K), weight_t.reshape(K, -1), out=out.view(N, -1))
        return out
    if weight_t.dim() == 2:
        weight_t = weight_t.expand(B, *weight_t.shape)
    inp = input.expand(B, -1, -1) if input.dim() == 3 else input
    return torch.baddbmm(inp, a, weight_t) if out is None else torch.baddbmm(inp, a, weight_t, out=out)


def _add_matmul_(x: Tensor, a: Tensor, weight_t: Tensor) -> Tensor:
    """x += a @ weight_t in place: x [B, N, M], a [B, N, K], weight_t [K, M] or [B, K, M]."""
    B, N, K = a.shape
    if B == 1:
        x.view(N, -1).addmm_(a.view(N, K), weight_t.reshape(K, -1))
    else:
        x.baddbmm_(a, weight_t.expand(B, *weight_t.shape) if weight_t.dim() == 2 else weight_t)
    return x


def _packed_head(head: "GaussianHead") -> tuple[Tensor, Tensor]:
    """A head's two linear layers as one [C, 14] matrix (and bias) in Params order: mean 3,
    log-scale 3, quat 4, colour 3, opacity 1."""
    wg, bg = _eff(head.geometry)
    wc, bc = _eff(head.color)
    weight = torch.cat([wg[:10], wc, wg[10:]])
    bias = torch.cat([bg[:10], bc, bg[10:]])
    return weight, bias


class _BlockWeights:
    """One transformer block's weights, gains applied and (where the latent is not involved) folded."""

    def __init__(self, block: Block):
        attn = block.attn
        self.kind, self.heads, self.group = attn.kind, attn.num_heads, attn.group_size
        C = attn.qkv.in_features
        self.channels = C
        self.norms = [self._norm(block.norm1), self._norm(block.norm2)]
        w, b = _eff(attn.qkv)
        if self.kind == "local":  # the kernel expects q already divided by sqrt(D)
            scale = torch.ones(3 * C)
            scale[:C] = 1 / math.sqrt(C // self.heads)
            w, b = w * scale[:, None], b * scale
        self.qkv_t, self.qkv_b = w.t().contiguous(), b
        self.proj_t, self.proj_b = (t.contiguous() for t in self._with_scale(attn.proj, block.ls1))
        self.ls1 = self._scale(block.ls1)
        w, b = _eff(block.mlp[0])
        self.fc1_t, self.fc1_b = w.t().contiguous(), b
        self.fc2_t, self.fc2_b = (t.contiguous() for t in self._with_scale(block.mlp[2], block.ls2))
        self.ls2 = self._scale(block.ls2)

    @staticmethod
    def _norm(norm: Norm) -> tuple[bool, Tensor, Tensor]:
        if norm.modulated:
            return (True, *_eff(norm.affine))
        return False, norm.gamma.detach(), norm.beta.detach()

    @staticmethod
    def _scale(ls: LayerScale) -> tuple[Tensor, Tensor] | None:
        return _eff(ls.to_scale) if ls.modulated else None

    @staticmethod
    def _with_scale(layer: EqualLinear, ls: LayerScale) -> tuple[Tensor, Tensor]:
        """(weight^T, bias) of `layer`, times a plain layerscale (the modulated one is per latent)."""
        w, b = _eff(layer)
        if not ls.modulated:
            return w.t() * ls.scale, b * ls.scale
        return w.t(), b


class _CpuInference:
    """`Generator.synthesize` for images that need no gradient, on the CPU: the same maths, with

    - what does not depend on the latent computed once: level-0 point features, the hierarchy
      indices, every weight with its runtime gain, the upsampler's two layers as one, both heads of a
      level as one matrix, the last level's upsampler and render head as one matrix;
    - each norm folded into the linear layer after it, each layerscale into the layer before it,
      each residual added by the matmul, so a block is four matmuls, a GELU and its attention;
    - sibling attention and the decoding of children's parameters as single-threaded Numba kernels.

    The levels up to the last kNN level's choice of neighbours run the reference code unchanged, so
    the neighbourhoods are exactly the reference's (a rounding difference could swap a 16th and 17th
    neighbour at nearly equal distances); everything after it agrees with it within float rounding.
    """

    def __init__(self, G: "Generator", kernels, version: tuple | None):
        self.version, self.kernels = version, kernels
        self._local = threading.local()  # per-thread scratch buffers (see `_scratch`)
        config = G.config
        with torch.no_grad():
            self.tokens0 = G.encoder(1)[0].contiguous()  # [N0, C0]
            knn = [level for level, kind in enumerate(config.attention) if kind == "knn"]
            self.exact_level = knn[-1] if knn else -1
            last = config.num_levels - 1
            self.blocks: dict[tuple[int, int], _BlockWeights] = {}
            self.upsample: dict[int, tuple[Tensor, Tensor]] = {}
            self.heads: dict[int, tuple[Tensor, Tensor]] = {}
            for level, module in enumerate(G.levels):
                if level >= self.exact_level:  # (earlier levels run the reference code)
                    for i, block in enumerate(module.blocks):
                        self.blocks[level, i] = _BlockWeights(block)
                if level == 0:
                    continue
                up = module.upsample
                r, c_out = up.ratio, up.out_channels
                we, be = _eff(up.expand)
                ws_, bs = _eff(up.skip)
                u = (we.view(r, c_out, -1) + ws_) * (1 / math.sqrt(2))  # [r, C_out, C_in]
                bu = (be.view(r, c_out) + bs) * (1 / math.sqrt(2))  # [r, C_out]
                render_w, render_b = _packed_head(module.render_head)
                # Heads as [K, C] matrices: their outputs come out planar, one row per parameter.
                if level == last:  # upsampler and render head as one matrix: no [N * r, C] tokens
                    fold = torch.einsum("kc,rci->rki", render_w, u).reshape(r * 14, -1)  # rows (child, param)
                    fold_b = (bu @ render_w.t() + render_b).reshape(r * 14)
                    self.heads[level] = (fold.contiguous(), fold_b)
                else:
                    self.upsample[level] = (u.reshape(r * c_out, -1).t().contiguous(), bu.reshape(-1))
                    anchor_w, anchor_b = _packed_head(module.anchor_head)
                    self.heads[level] = (torch.cat([render_w, anchor_w]).contiguous(),
                                         torch.cat([render_b, anchor_b]))
            self.view_heads = [None] + [
                _eff(module.render_head.color_view)[0] if module.render_head.color_view is not None else None
                for module in list(G.levels)[1:]
            ]

    def _scratch(self, name: str, *shape: int) -> Tensor:
        """A float32 buffer reused from call to call (fresh megabytes cost page faults on every call)."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        key = (name, shape)
        if key not in buffers:
            buffers[key] = torch.empty(shape)
        return buffers[key]

    # ------------------------------------------------------------------ blocks
    def _norm(self, norm, x: Tensor, w: Tensor | None) -> tuple[Tensor, Tensor]:
        """(s, t) [B, 1, C] with norm(x, w) == x * s + t."""
        B, _, C = x.shape
        mean = torch.empty(B, C)
        var = torch.empty(B, C)
        self.kernels.mean_var(x.numpy(), mean.numpy(), var.numpy())
        modulated, weight, bias = norm
        if modulated:
            gamma_minus_one, beta = torch.addmm(bias, w, weight.t()).chunk(2, dim=-1)  # [B, C] each
            gamma = 1 + gamma_minus_one
        else:
            gamma, beta = weight, bias
        s = torch.rsqrt(var + 1e-5) * gamma
        return s.unsqueeze(1), (beta - mean * s).unsqueeze(1)

    @staticmethod
    def _folded(x: Tensor, s: Tensor, t: Tensor, weight_t: Tensor, bias: Tensor, out: Tensor | None = None) -> Tensor:
        """(x * s + t) @ weight_t + bias, with s and t folded into the matrix and the bias."""
        return _addmm(torch.baddbmm(bias, t, weight_t.expand(t.shape[0], *weight_t.shape)),
                      x, weight_t * s.transpose(1, 2), out)

    @staticmethod
    def _scaled(weight_t: Tensor, bias: Tensor, ls, w: Tensor | None) -> tuple[Tensor, Tensor]:
        """(weight^T, bias) times the modulated layerscale of w ([B, C]), if any: [B, K, C], [B, 1, C]."""
        if ls is None:
            return weight_t, bias.view(1, 1, -1)
        scale = torch.addmm(ls[1], w, ls[0].t()).unsqueeze(1)  # [B, 1, C]
        return weight_t * scale, bias * scale

    def _block(self, p: _BlockWeights, block: Block, x: Tensor, pending: Tensor | None,
               w1: Tensor | None, w2: Tensor | None, exact: bool, name: str) -> tuple[Tensor, Tensor]:
        """One block on tokens x + pending ([B, 1, C] bias not yet added): (x updated in place, new pending)."""
        B, N, C = x.shape
        H = p.heads
        if exact:  # the reference's normalised tokens and q, k, v, bit for bit: its neighbours
            xn = block.norm1(x if pending is None else x + pending, w1)
            qkv = block.attn.qkv(xn)
            out = self._knn(block.attn, xn, qkv)
        else:
            s, t = self._norm(p.norms[0], x, w1)
            qkv = self._folded(x, s, t, p.qkv_t, p.qkv_b, self._scratch(name + ".qkv", B, N, 3 * C))
            if p.kind == "local":
                out = self._scratch(name + ".attn", B, N, C)
                self.kernels.sibling_attention(qkv.numpy(), out.numpy(), p.group, H)
            elif p.kind == "global":
                q, k, v = qkv.view(B, N, 3, H, C // H).unbind(dim=2)
                out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
                out = out.transpose(1, 2).reshape(B, N, C)
            else:
                out = self._knn(block.attn, x * s + t, qkv)
        weight_t, bias = self._scaled(p.proj_t, p.proj_b, p.ls1, w1)
        _add_matmul_(x, out, weight_t)
        pending = bias if pending is None else pending + bias
        s, t = self._norm(p.norms[1], x, w2)
        hidden = self._folded(x, s, t, p.fc1_t, p.fc1_b, self._scratch(name + ".mlp", B, N, p.fc1_t.shape[1]))
        torch.ops.aten.gelu_(hidden)
        weight_t, bias = self._scaled(p.fc2_t, p.fc2_b, p.ls2, w2)
        return _add_matmul_(x, hidden, weight_t), pending + bias

    def _knn(self, attn, xn: Tensor, qkv: Tensor) -> Tensor:
        """kNN attention from the normalised tokens xn and their q, k, v ([B, N, 3C]) -> [B, N, C]."""
        B, N, C3 = qkv.shape
        distance = attn.distances(xn)  # [B, N, N], the reference's numbers: its choice of neighbours
        K = min(attn.knn_k, N)
        neighbours = torch.empty(B, N, K, dtype=torch.int64)
        self.kernels.smallest(distance.numpy(), K, neighbours.numpy())
        out = torch.empty(B, N, C3 // 3)
        self.kernels.knn_attention(qkv.contiguous().numpy(), neighbours.numpy(), out.numpy(), attn.num_heads)
        return out

    # ------------------------------------------------------------------ the whole synthesis
    def synthesize(self, G: "Generator", ws: Tensor, view_embedding: Tensor | None) -> Gaussians:
        config, slices = G.config, G.config.w_slices()
        B = ws.shape[0]
        level_ids, parent_ids = G.hierarchy(ws.device)
        total = level_ids.numel()
        out_mean, out_scale, out_color = (torch.empty(B, total, 3) for _ in range(3))
        out_quat, out_opacity = torch.empty(B, total, 4), torch.empty(B, total)
        outputs = (out_mean, out_scale, out_quat, out_color, out_opacity)
        threshold = np.float32(-math.log(config.image_resolution))
        split_log = np.float32(math.log(config.split_ratio))
        clamp = np.float32(config.position_clamp)
        floor = (math.log(config.anchor_floor_pixels / config.image_resolution)
                 if config.anchor_floor_pixels > 0 else None)

        tokens = self.tokens0.expand(B, -1, -1)
        if self.exact_level < 0:  # level 0 runs here, and blocks update their tokens in place
            tokens = tokens.clone()
        pending: Tensor | None = None
        anchors: Tensor | None = None  # [B, 14, N] planar parents of the next level
        offset = 0
        last = config.num_levels - 1
        for level, module in enumerate(G.levels):
            w = ws[:, slices[level]] if config.modulated[level] else None
            d = None  # [B, J, 14 * heads, M] planar head outputs (see the decode kernel)
            if level < self.exact_level:
                tokens = module(tokens, w)  # the reference: a later kNN choice depends on these bits
            else:
                for i, block in enumerate(module.blocks):
                    w1, w2 = (None, None) if w is None else (w[:, 2 * i], w[:, 2 * i + 1])
                    exact = level == self.exact_level and block.attn.kind == "knn"
                    tokens, pending = self._block(self.blocks[level, i], block, tokens, pending, w1, w2, exact,
                                                  f"L{level}.{i}")
                if level == 0:
                    tokens, pending = tokens + pending, None
                elif level == last:  # the upsampler and the render head in one matrix
                    weight, bias = self.heads[level]
                    r = module.upsample.ratio
                    bias = bias.view(1, 1, -1) if pending is None else bias + pending @ weight.t()
                    bias = self._with_view(bias, level, view_embedding, r)
                    d = self._planar(weight, bias, tokens, self._scratch(f"L{level}.heads", B, *weight.shape[:1],
                                                                         tokens.shape[1])).view(B, r, 14, -1)
                else:
                    weight_t, bias = self.upsample[level]
                    bias = bias.view(1, 1, -1) if pending is None else bias + pending @ weight_t
                    up = self._scratch(f"L{level}.up", B, tokens.shape[1], weight_t.shape[1])
                    tokens = _addmm(bias, tokens, weight_t, up).view(B, -1, module.upsample.out_channels)
                    pending = None
            n = config.gaussians_at_level(level)
            if level == 0:
                rendered = decode_level0(module.render_head(tokens, view_embedding), config, anchor=False)
                for target, value in zip(outputs, rendered):
                    target[:, offset:offset + n] = value.squeeze(-1) if target.dim() == 2 else value
                if module.anchor_head is not None:
                    packed = torch.cat(list(decode_level0(module.anchor_head(tokens), config, anchor=True)), -1)
                    anchors = packed.transpose(1, 2).contiguous()
            else:
                if d is None:
                    weight, bias = self.heads[level]
                    bias = self._with_view(bias.view(1, 1, -1), level, view_embedding, 1)
                    d = self._planar(weight, bias, tokens, self._scratch(f"L{level}.heads", B, weight.shape[0], n))
                    d = d.unsqueeze(1)  # [B, 1, 28, n]
                heads = d.shape[2] // 14
                self._activate(d, heads, config.soft_clamp)
                raw = floor is not None and heads == 2
                child_anchors = self._scratch(f"L{level}.anchors", B, 14, n if heads == 2 else 0)
                self.kernels.decode_children(
                    anchors.numpy(), anchors[:, 3:6].exp().numpy(), d.numpy(), config.up_ratio, heads,
                    threshold, split_log, clamp, raw, *(t.numpy() for t in outputs), offset, child_anchors.numpy(),
                )
                if raw:  # bound_log_scale's floor on the anchors, then its clamp
                    scale = child_anchors[:, 3:6]
                    scale.copy_((F.softplus(scale - floor) + floor).clamp_(LOG_SCALE_MIN, LOG_SCALE_MAX))
                anchors = child_anchors if heads == 2 else None
            offset += n
        if G.background is not None:
            bg = G.background(ws[:, slices["background"]].squeeze(1))
            for target, value in zip(outputs, bg):
                target[:, offset:] = value.squeeze(-1) if target.dim() == 2 else value
        return Gaussians(means=out_mean, log_scales=out_scale, quats=out_quat, opacity_logits=out_opacity,
                         sh_dc=out_color, level=level_ids, parent=parent_ids)

    @staticmethod
    def _planar(weight: Tensor, bias: Tensor, x: Tensor, out: Tensor) -> Tensor:
        """(x @ weight^T + bias) transposed, into out: weight [K, C], bias [B or 1, 1, K], x [B, N, C] -> [B, K, N]."""
        B, N, C = x.shape
        if B == 1:
            torch.addmm(bias.reshape(-1, 1), weight, x[0].t(), out=out[0])
        else:
            torch.baddbmm(bias.transpose(1, 2), weight.expand(B, *weight.shape), x.transpose(1, 2), out=out)
        return out

    @staticmethod
    def _activate(d: Tensor, heads: int, soft_clamp: bool) -> None:
        """In place, vectorised: the soft clamp (if on) of everything but the mean offsets, tanh of the
        mean offsets, softplus(-x) of the log-scale offsets (the decode kernel's inputs)."""
        B, J, K, M = d.shape
        rows = d.view(B, J, heads, 14, M)
        if soft_clamp:
            rows[..., 3:, :].mul_(0.05).tanh_().mul_(20)
        rows[..., :3, :].tanh_()
        scale = rows[..., 3:6, :]
        scale.copy_(F.softplus(scale.neg()))

    def _with_view(self, bias: Tensor, level: int, view_embedding: Tensor | None, children: int) -> Tensor:
        """bias [.., 1, children * 14 * k] plus the render head's view-dependent colour term."""
        weight = self.view_heads[level]
        if weight is None or view_embedding is None:
            return bias
        term = view_embedding @ weight.t()  # [B, 3]
        B = term.shape[0]
        width = bias.shape[-1] // children
        add = torch.zeros(B, children, width)
        add[:, :, 10:13] = term[:, None, :]
        return bias + add.view(B, 1, -1)


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
