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
    """The compiled kernels (a namespace), or None if Numba does not import. Compiled on first use
    and cached on disk (`cache=True`), like the compiled rasterizer."""
    if not _KERNELS:
        try:
            _KERNELS.append(_compile_kernels())
        except Exception:  # ImportError, or anything numba's import raises: the PyTorch path works
            _KERNELS.append(None)
    return _KERNELS[0]


def _compile_kernels():
    import types

    import numba as nb
    import numpy as np

    fast = {"reassoc", "contract", "arcp"}  # vectorised dot products; nothing that changes NaN/inf handling

    @nb.njit(cache=True, fastmath=fast)
    def mean_var(x, mean, var):  # x [B, N, C] f32 -> mean, var [B, C] f32 (biased, over N), float64 sums
        B, N, C = x.shape
        for b in range(B):
            acc = np.zeros(C, np.float64)
            for n in range(N):
                for c in range(C):
                    acc[c] += x[b, n, c]
            m = acc / N
            acc2 = np.zeros(C, np.float64)
            for n in range(N):
                for c in range(C):
                    d = x[b, n, c] - m[c]
                    acc2[c] += d * d
            for c in range(C):
                mean[b, c] = m[c]
                var[b, c] = acc2[c] / N

    @nb.njit(cache=True, fastmath=fast)
    def sibling_attention(qkv, out, group, heads):
        # qkv [B, N, 3C] (q already scaled by 1/sqrt(D)), out [B, N, C]: softmax attention inside each
        # run of `group` consecutive tokens, per head. Products over all C channels at once, then
        # per-head sums: vector-wide work instead of D-long dot products.
        B, N, C3 = qkv.shape
        C = C3 // 3
        D = C // heads
        product = np.empty(C, np.float32)
        scores = np.empty((group, group, heads), np.float32)
        weight = np.empty(C, np.float32)
        for b in range(B):
            for g0 in range(0, N, group):
                for i in range(group):
                    for j in range(group):
                        for c in range(C):
                            product[c] = qkv[b, g0 + i, c] * qkv[b, g0 + j, C + c]
                        for h in range(heads):
                            acc = np.float32(0.0)
                            for d in range(D):
                                acc += product[h * D + d]
                            scores[i, j, h] = acc
                for i in range(group):
                    for h in range(heads):
                        top = scores[i, 0, h]
                        for j in range(1, group):
                            top = max(top, scores[i, j, h])
                        total = np.float32(0.0)
                        for j in range(group):
                            e = np.exp(scores[i, j, h] - top)
                            scores[i, j, h] = e
                            total += e
                        inv = np.float32(1.0) / total
                        for j in range(group):
                            scores[i, j, h] *= inv
                    for c in range(C):
                        out[b, g0 + i, c] = 0.0
                    for j in range(group):
                        for h in range(heads):
                            for d in range(D):
                                weight[h * D + d] = scores[i, j, h]
                        for c in range(C):
                            out[b, g0 + i, c] += weight[c] * qkv[b, g0 + j, 2 * C + c]

    @nb.njit(cache=True, fastmath=fast)
    def decode_children(parent, parent_scale, d, up, heads, threshold, split_log, clamp, raw_anchor_scale,
                        out_mean, out_log_scale, out_quat, out_color, out_opacity, offset, anchors):
        # The maths of generator.decode_children and bound_log_scale, per child, in float32 like PyTorch,
        # on planar arrays (one row per parameter, so that PyTorch's vectorised tanh and softplus did the
        # transcendental parts before):
        #   parent [B, 14, Np]: mean 3, log-scale 3, quat 4, colour 3, opacity 1; parent_scale [B, 3, Np]
        #     is exp(its log-scale);
        #   d [B, J, 14 * heads, M]: the heads' outputs (render head, then the anchor head when heads
        #     == 2) with tanh taken of the mean rows and softplus(-x) of the log-scale rows; child c of
        #     the level is column c // J of block c % J;
        #   writes the drawn children into out_*[:, offset + c] and the anchors into anchors [B, 14, N],
        #   their log-scales unclamped if raw_anchor_scale (the caller applies the anchor floor).
        B, _, Np = parent.shape
        J = d.shape[1]
        R = np.empty((3, 3), np.float32)
        ls_parent = np.empty(3, np.float32)
        t = np.empty(3, np.float32)
        lo, hi = np.float32(-8.0), np.float32(0.0)
        one, two = np.float32(1.0), np.float32(2.0)
        for b in range(B):
            for p in range(Np):
                w, x, y, z = parent[b, 6, p], parent[b, 7, p], parent[b, 8, p], parent[b, 9, p]
                n = max(np.sqrt(w * w + x * x + y * y + z * z), np.float32(1e-12))
                w, x, y, z = w / n, x / n, y / n, z / n
                R[0, 0], R[0, 1], R[0, 2] = one - two * (y * y + z * z), two * (x * y - w * z), two * (x * z + w * y)
                R[1, 0], R[1, 1], R[1, 2] = two * (x * y + w * z), one - two * (x * x + z * z), two * (y * z - w * x)
                R[2, 0], R[2, 1], R[2, 2] = two * (x * z - w * y), two * (y * z + w * x), one - two * (x * x + y * y)
                top = max(parent[b, 3, p], max(parent[b, 4, p], parent[b, 5, p]))
                shrink = split_log if top > threshold else np.float32(0.0)
                for a in range(3):
                    ls_parent[a] = parent[b, 3 + a, p] - shrink
                for j in range(up):
                    c = p * up + j
                    jj, m = c % J, c // J
                    for h in range(heads):
                        k = 14 * h
                        for a in range(3):
                            t[a] = parent_scale[b, a, p] * d[b, jj, k + a, m]
                        for a in range(3):
                            mean = parent[b, a, p] + (R[a, 0] * t[0] + R[a, 1] * t[1] + R[a, 2] * t[2])
                            mean = min(max(mean, -clamp), clamp)
                            s = ls_parent[a] - d[b, jj, k + 3 + a, m]
                            if h == 0:
                                out_mean[b, offset + c, a] = mean
                                out_log_scale[b, offset + c, a] = min(max(s, lo), hi)
                            else:
                                anchors[b, a, c] = mean
                                anchors[b, 3 + a, c] = s if raw_anchor_scale else min(max(s, lo), hi)
                        for a in range(8):  # quat 4, colour 3, opacity 1: residuals of the parent's
                            v = parent[b, 6 + a, p] + d[b, jj, k + 6 + a, m]
                            if h == 1:
                                anchors[b, 6 + a, c] = v
                            elif a < 4:
                                out_quat[b, offset + c, a] = v
                            elif a < 7:
                                out_color[b, offset + c, a - 4] = v
                            else:
                                out_opacity[b, offset + c] = v

    @nb.njit(cache=True)
    def smallest(distance, k, out):
        # distance [B, N, M] -> out [B, N, k] int64: the indices of each row's k smallest values (the
        # same set as torch.topk(largest=False) when the values are distinct), in ascending order.
        B, N, M = distance.shape
        values = np.empty(k, distance.dtype)
        index = np.empty(k, np.int64)
        for b in range(B):
            for i in range(N):
                row = distance[b, i]
                for j in range(k):  # the first k, sorted by insertion
                    v = row[j]
                    pos = j
                    while pos > 0 and values[pos - 1] > v:
                        values[pos] = values[pos - 1]
                        index[pos] = index[pos - 1]
                        pos -= 1
                    values[pos] = v
                    index[pos] = j
                for j in range(k, M):
                    v = row[j]
                    if v < values[k - 1]:
                        pos = k - 1
                        while pos > 0 and values[pos - 1] > v:
                            values[pos] = values[pos - 1]
                            index[pos] = index[pos - 1]
                            pos -= 1
                        values[pos] = v
                        index[pos] = j
                for j in range(k):
                    out[b, i, j] = index[j]

    @nb.njit(cache=True, fastmath=fast)
    def knn_attention(qkv, neighbours, out, heads):
        # qkv [B, N, 3C], neighbours [B, N, K] int64, out [B, N, C]: each token attends to its K
        # neighbours, per head (scores scaled by 1/sqrt(D) here).
        B, N, C3 = qkv.shape
        K = neighbours.shape[2]
        C = C3 // 3
        D = C // heads
        scale = np.float32(1.0 / np.sqrt(D))
        p = np.empty(K, np.float32)
        for b in range(B):
            for i in range(N):
                for h in range(heads):
                    q0, k0, v0 = h * D, C + h * D, 2 * C + h * D
                    top = np.float32(-np.inf)
                    for j in range(K):
                        m = neighbours[b, i, j]
                        s = np.float32(0.0)
                        for d in range(D):
                            s += qkv[b, i, q0 + d] * qkv[b, m, k0 + d]
                        p[j] = s * scale
                        top = max(top, p[j])
                    total = np.float32(0.0)
                    for j in range(K):
                        p[j] = np.exp(p[j] - top)
                        total += p[j]
                    inv = np.float32(1.0) / total
                    for d in range(D):
                        out[b, i, q0 + d] = 0.0
                    for j in range(K):
                        m = neighbours[b, i, j]
                        wj = p[j] * inv
                        for d in range(D):
                            out[b, i, q0 + d] += wj * qkv[b, m, v0 + d]

    return types.SimpleNamespace(mean_var=mean_var, sibling_attention=sibling_attention,
                                 decode_children=decode_children, knn_attention=knn_attention, smallest=smallest)
