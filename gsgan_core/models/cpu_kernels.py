"""Numba kernels of the lite generator's CPU inference path (see `layers.cpu_kernels` and
`Generator.synthesize`): the element-wise stages run as a few compiled loops instead of dozens of
PyTorch ops. Compiled on first use and cached on disk, like the compiled rasterizer."""

import numba as nb
import numpy as np

FAST = {"reassoc", "contract", "arcp"}  # vectorised dot products; nothing that changes NaN/inf handling


@nb.njit(cache=True, fastmath=FAST)
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


@nb.njit(cache=True, fastmath=FAST)
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


@nb.njit(cache=True, fastmath=FAST)
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
            for j in range(M):  # insertion sort into the k kept: the first k fill it, later ones replace the last
                v = row[j]
                if j < k:
                    pos = j
                elif v < values[k - 1]:
                    pos = k - 1
                else:
                    continue
                while pos > 0 and values[pos - 1] > v:
                    values[pos] = values[pos - 1]
                    index[pos] = index[pos - 1]
                    pos -= 1
                values[pos] = v
                index[pos] = j
            for j in range(k):
                out[b, i, j] = index[j]


@nb.njit(cache=True, fastmath=FAST)
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
