"""Building blocks of the generator: equalised-lr linear layers, w-modulated norms and layerscales,
the three kinds of attention, the transformer block and the x4 token upsampler.

Token tensors are [B, N, C] throughout (batch, points, channels). At the end: the Numba kernels of
the generator's CPU inference path (`cpu_kernels`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EqualLinear(nn.Module):
    """StyleGAN2's fully-connected layer: weights stored at unit scale, scaled at run time.

    Every linear layer of the generator but its two Fourier-feature inputs is one of these, as in
    GSGAN's code. The runtime gain lr_mul/sqrt(in) keeps Adam's step the same size relative to every
    layer's weights. Adam moves a weight by about lr per step whatever its scale, so a plain
    nn.Linear, whose weights are ~1/sqrt(in), learns sqrt(in) times faster, and heads scaled by 0.1
    ten times faster again, enough to send the fine levels' colours to 1e4-1e7 and their opacities to
    0. lr_mul = 0.01 makes the mapping network learn 100x slower, as in the reference. `weight_init` scales the initial weights (0: a zero-initialised layer, a layerscale).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        weight_init: float = 1.0,
        bias: bool = True,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * (weight_init / lr_mul))
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.bias_gain
        return F.linear(x, self.weight * self.weight_gain, bias)


def instance_norm_over_points(x: Tensor, eps: float = 1e-5) -> Tensor:
    """x: [B, N, C] normalised to zero mean / unit variance over the point axis N."""
    var, mean = torch.var_mean(x, dim=1, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


class Norm(nn.Module):
    """Instance norm over points, then an affine transform.

    Modulated (w_dim given): AdaIN, x_hat * gamma(w) + beta(w) with gamma biased to 1.
    Plain (w_dim None): a learnable per-channel gamma (init 1) and beta (init 0).
    """

    def __init__(self, channels: int, w_dim: int | None):
        super().__init__()
        self.modulated = w_dim is not None
        if self.modulated:
            self.affine = EqualLinear(w_dim, 2 * channels)  # predicts (gamma - 1, beta)
        else:
            self.gamma = nn.Parameter(torch.ones(channels))
            self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, w: Tensor | None) -> Tensor:  # x [B, N, C], w [B, w_dim]
        x = instance_norm_over_points(x)
        if not self.modulated:
            return x * self.gamma + self.beta
        gamma_minus_one, beta = self.affine(w).unsqueeze(1).chunk(2, dim=-1)
        return x * (1 + gamma_minus_one) + beta


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch, zero at initialisation so each block starts as identity.

    Modulated: the scale is a function of w (a linear layer initialised to zero).
    """

    def __init__(self, channels: int, w_dim: int | None):
        super().__init__()
        self.modulated = w_dim is not None
        if self.modulated:
            self.to_scale = EqualLinear(w_dim, channels, weight_init=0.0)
        else:
            self.scale = nn.Parameter(torch.zeros(channels))

    def forward(self, w: Tensor | None) -> Tensor:  # -> [B, 1, C] or [C]
        return self.to_scale(w).unsqueeze(1) if self.modulated else self.scale


class Attention(nn.Module):
    """Multi-head self-attention over tokens, in one of three neighbourhoods.

    - "global": every token attends to every token (level 0: 256 tokens).
    - "knn":    each token attends to its k nearest tokens in feature space (levels 1-2).
    - "local":  each token attends to its siblings, the up_ratio children of one parent, which the
                upsampler stores next to each other (levels 3+, tens of thousands of tokens).
    """

    def __init__(self, channels: int, kind: str, num_heads: int, knn_k: int = 16, group_size: int = 4):
        super().__init__()
        self.kind, self.num_heads, self.knn_k, self.group_size = kind, num_heads, knn_k, group_size
        self.qkv = EqualLinear(channels, 3 * channels)
        self.proj = EqualLinear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:  # [B, N, C] -> [B, N, C]
        B, N, C = x.shape
        H, D = self.num_heads, C // self.num_heads
        q, k, v = self.qkv(x).view(B, N, 3, H, D).unbind(dim=2)  # each [B, N, H, D]
        if self.kind == "global":
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            out = out.transpose(1, 2)
        elif self.kind == "knn":
            out = self._knn(x, q, k, v)
        else:  # siblings: G-token groups; batched 4x4 products (measured faster than SDPA here)
            G = self.group_size
            q, k, v = (t.reshape(B, N // G, G, H, D) for t in (q, k, v))
            scores = torch.einsum("bgihd,bgjhd->bghij", q, k) / math.sqrt(D)
            out = torch.einsum("bghij,bgjhd->bgihd", scores.softmax(dim=-1), v)
        return self.proj(out.reshape(B, N, C))

    def distances(self, x: Tensor) -> Tensor:  # [B, N, C] -> [B, N, N]
        """Squared feature-space distances up to a per-row constant: |x_j|^2 - 2 x_i.x_j (one matmul)."""
        with torch.no_grad():  # the neighbourhood is a choice, not a differentiable quantity
            sq_norm = x.square().sum(-1)  # [B, N]
            return sq_norm.unsqueeze(1) - 2 * x @ x.transpose(1, 2)

    def neighbours(self, x: Tensor) -> Tensor:  # [B, N, C] -> [B, N, K] int64
        """Each token's k nearest tokens in feature space (itself included)."""
        return self.distances(x).topk(min(self.knn_k, x.shape[1]), dim=-1, largest=False).indices

    def _knn(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, N, H, D = q.shape
        neighbours = self.neighbours(x)  # [B, N, K]
        K = neighbours.shape[-1]
        gather_index = neighbours.reshape(B, N * K, 1, 1).expand(B, N * K, H, D)
        k_nb = k.gather(1, gather_index).view(B, N, K, H, D)
        v_nb = v.gather(1, gather_index).view(B, N, K, H, D)
        scores = torch.einsum("bnhd,bnkhd->bnhk", q, k_nb) / math.sqrt(D)
        return torch.einsum("bnhk,bnkhd->bnhd", scores.softmax(dim=-1), v_nb)


class Block(nn.Module):
    """x = x + attn(norm(x, w1)) * ls(w1);  x = x + mlp(norm(x, w2)) * ls(w2).  w's are None if unmodulated."""

    def __init__(self, channels: int, kind: str, w_dim: int | None, num_heads: int, knn_k: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = Norm(channels, w_dim)
        self.attn = Attention(channels, kind, num_heads, knn_k)
        self.ls1 = LayerScale(channels, w_dim)
        self.norm2 = Norm(channels, w_dim)
        self.mlp = nn.Sequential(
            EqualLinear(channels, mlp_ratio * channels), nn.GELU(), EqualLinear(mlp_ratio * channels, channels)
        )
        self.ls2 = LayerScale(channels, w_dim)

    def forward(self, x: Tensor, w1: Tensor | None = None, w2: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x, w1)) * self.ls1(w1)
        return x + self.mlp(self.norm2(x, w2)) * self.ls2(w2)


class Upsample(nn.Module):
    """Each token becomes `ratio` child tokens: expand(x) + skip(x), divided by sqrt(2).

    Children of token p land at rows ratio*p .. ratio*p + ratio-1, so siblings stay adjacent.
    """

    def __init__(self, in_channels: int, out_channels: int, ratio: int):
        super().__init__()
        self.ratio, self.out_channels = ratio, out_channels
        self.expand = EqualLinear(in_channels, ratio * out_channels)
        self.skip = EqualLinear(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:  # [B, N, C_in] -> [B, N * ratio, C_out]
        B, N, _ = x.shape
        children = self.expand(x).view(B, N, self.ratio, self.out_channels)
        children = (children + self.skip(x).unsqueeze(2)) * (1 / math.sqrt(2))
        return children.reshape(B, N * self.ratio, self.out_channels)


# ====================================================================== CPU inference kernels
# The generator's CPU inference path (`Generator.synthesize` without grad, see generator.py) runs its
# element-wise stages as a few Numba kernels instead of dozens of PyTorch ops. On a small shared
# machine every parallel PyTorch op waits for its slowest thread (with another job on the cores that
# is a scheduler time slice, milliseconds, per op); these kernels run single-threaded in the caller.
# Numba is a dependency (the compiled rasterizer uses it too); `cpu_kernels()` is None without it.
_KERNELS: list = []


def cpu_kernels():
    """The compiled kernels (the cpu_kernels module), or None if Numba does not import. Compiled on first use
    and cached on disk (`cache=True`), like the compiled rasterizer."""
    if not _KERNELS:
        try:
            from gsgan_core.models import cpu_kernels as kernels

            _KERNELS.append(kernels)
        except Exception:  # ImportError, or anything numba's import raises: the PyTorch path works
            _KERNELS.append(None)
    return _KERNELS[0]
