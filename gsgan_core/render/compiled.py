"""A compiled CPU rasterizer for viewing: the reference's maths, forward only, in Numba.

Same images as `reference.py` (read that first): EWA projection with the 0.3 px^2 dilation and the
FOV-clamped Jacobian, the same culling (near/far, not positive definite, opacity < 1/255, zero
radius, off screen), front-to-back compositing with the same rules (alpha capped at 0.999, skipped
below 1/255 and for negative exponents, a pixel stops before the Gaussian that would take its
transmittance to <= 1e-4), colour, alpha and expected depth out, background added as T * bg.

What makes it fast, none of which changes a pixel:
- Projection is one parallel loop over the Gaussians, straight from the raw parameters (the
  activations are done there too: no PyTorch ops per frame), float64 maths on float32 inputs.
- Each drawable Gaussian gets the pixel rectangle outside which its alpha is below 1/255 (so the
  reference skips it there too): |dx| <= sqrt(2 ln(o / (1/255)) * Sigma_xx), the same for y, and never
  more than the reference's 3.33-sigma box. Gaussians are binned into 16x16 tiles by that rectangle,
  after one stable radix sort by depth, so every tile's list is already front to back.
- Tiles are composited in parallel, in float32, balanced over the threads by their cost; inside
  a tile each Gaussian only touches the pixels of its own rectangle, and each pixel row of it only
  the span where its exponent can be under the threshold (a quadratic in x); a row whose pixels
  have all stopped is skipped, and a tile ends when all its pixels have stopped.

Not differentiable (no autograd): `render(..., backend="auto")` uses it on CPU only when no
gradient can be needed. The first call compiles the kernels (seconds); `cache=True` keeps the
machine code in __pycache__ (or NUMBA_CACHE_DIR) for later processes.

Measured with benchmarks/bench_cpu_render.py; `bench_cpu_render.py --help` says what it compares.
"""

from __future__ import annotations

import math
import os
import threading

import numba as nb
import numpy as np
import torch
from torch import Tensor

from ..gaussians import SH_C0
from .reference import ALPHA_THRESHOLD, EPS2D, FOV_MARGIN, MAX_ALPHA, MAX_EXTEND, TILE_SIZE, TRANSMITTANCE_STOP

# One record per drawn Gaussian (float32, 64 bytes), in depth order: all the compositing loop reads.
_MX, _MY, _CA, _CB, _CC, _OP, _R, _G, _B, _Z, _L2, _X0, _Y0, _X1, _Y1 = range(15)
_NFIELDS = 16

_F_THRESHOLD = np.float32(ALPHA_THRESHOLD)
_F_MAX_ALPHA = np.float32(MAX_ALPHA)
_F_T_STOP = np.float32(TRANSMITTANCE_STOP)
_F_HALF = np.float32(0.5)
_F_ONE = np.float32(1.0)
_F_ZERO = np.float32(0.0)
_F_TINY = np.float32(1e-10)
_F_64 = np.float32(64.0)
_F_M2 = np.float32(-2.0)
_F_18 = np.float32(TILE_SIZE + 2.0)
_NARROW = 3  # boxes narrower than this many pixels skip the per-row span (cheaper to test them all)

# numba's own "workqueue" thread pool, unless NUMBA_THREADING_LAYER says otherwise: beside PyTorch's
# OpenMP threads, OpenMP's spinning workers cost 10-20 % more wall and CPU time per frame on a
# 2-core CPU (benchmarks/bench_cpu_render.py). It takes effect if no parallel numba code ran
# in this process before. The workqueue pool aborts the process on concurrent launches, so one lock
# keeps calls from several Python threads sequential.
if "NUMBA_THREADING_LAYER" not in os.environ:
    nb.config.THREADING_LAYER = "workqueue"
_LOCK = threading.Lock()


def numba_version() -> str:
    return str(nb.__version__)


def num_threads() -> int:
    """Threads the parallel loops use (numba.set_num_threads / NUMBA_NUM_THREADS; default: the cores)."""
    return int(nb.get_num_threads())


@nb.njit(cache=True, error_model="numpy", inline="always")
def _cov2d(viewmat, quat, log_scale, x, y, z, fx, fy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg, eps2d):
    """The EWA screen-space covariance (a, b; b, c) of one Gaussian at camera point (x, y, z), dilated by eps2d."""
    r00, r01, r02 = viewmat[0, 0], viewmat[0, 1], viewmat[0, 2]
    r10, r11, r12 = viewmat[1, 0], viewmat[1, 1], viewmat[1, 2]
    r20, r21, r22 = viewmat[2, 0], viewmat[2, 1], viewmat[2, 2]
    # Rotation of the unit quaternion, its columns scaled: M = R S.
    qw, qx, qy, qz = np.float64(quat[0]), np.float64(quat[1]), np.float64(quat[2]), np.float64(quat[3])
    qn = max(math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12)
    qw, qx, qy, qz = qw / qn, qx / qn, qy / qn, qz / qn
    sx = math.exp(np.float64(log_scale[0]))
    sy = math.exp(np.float64(log_scale[1]))
    sz = math.exp(np.float64(log_scale[2]))
    m00 = (1 - 2 * (qy * qy + qz * qz)) * sx
    m01 = (2 * (qx * qy - qw * qz)) * sy
    m02 = (2 * (qx * qz + qw * qy)) * sz
    m10 = (2 * (qx * qy + qw * qz)) * sx
    m11 = (1 - 2 * (qx * qx + qz * qz)) * sy
    m12 = (2 * (qy * qz - qw * qx)) * sz
    m20 = (2 * (qx * qz - qw * qy)) * sx
    m21 = (2 * (qy * qz + qw * qx)) * sy
    m22 = (1 - 2 * (qx * qx + qy * qy)) * sz
    # Camera-space factor A = V M, so that Sigma_cam = V Sigma V^T = A A^T.
    a00 = r00 * m00 + r01 * m10 + r02 * m20
    a01 = r00 * m01 + r01 * m11 + r02 * m21
    a02 = r00 * m02 + r01 * m12 + r02 * m22
    a10 = r10 * m00 + r11 * m10 + r12 * m20
    a11 = r10 * m01 + r11 * m11 + r12 * m21
    a12 = r10 * m02 + r11 * m12 + r12 * m22
    a20 = r20 * m00 + r21 * m10 + r22 * m20
    a21 = r20 * m01 + r21 * m11 + r22 * m21
    a22 = r20 * m02 + r21 * m12 + r22 * m22
    # Perspective Jacobian at the mean, x/z and y/z clamped to the widened FOV.
    rz = 1.0 / z
    tx = z * min(lim_x_pos, max(-lim_x_neg, x * rz))
    ty = z * min(lim_y_pos, max(-lim_y_neg, y * rz))
    j00, j02 = fx * rz, -fx * tx * rz * rz
    j11, j12 = fy * rz, -fy * ty * rz * rz
    # U = J A (2 x 3); cov2d = U U^T, dilated by eps2d.
    u0 = j00 * a00 + j02 * a20
    u1 = j00 * a01 + j02 * a21
    u2 = j00 * a02 + j02 * a22
    v0 = j11 * a10 + j12 * a20
    v1 = j11 * a11 + j12 * a21
    v2 = j11 * a12 + j12 * a22
    return (u0 * u0 + u1 * u1 + u2 * u2 + eps2d, u0 * v0 + u1 * v1 + u2 * v2, v0 * v0 + v1 * v1 + v2 * v2 + eps2d)


@nb.njit(parallel=True, cache=True, error_model="numpy")
def _project(means, log_scales, quats, opacity_logits, sh_dc, viewmat, K, width, height, near, far,
             eps2d, records, depths, drawn):
    """EWA projection of every Gaussian, from the raw (not yet activated) parameters, with the
    reference's activations: scale = exp, opacity = sigmoid, rgb = max(SH_C0 sh + 0.5, 0), unit
    quaternion. Sets drawn[i] and, for the Gaussians drawn, fills records[i]: pixel mean, conic,
    opacity, colour, depth, twice the exponent limit, and the pixel box (inclusive); and depths[i]
    (the sort key, contiguous)."""
    n = means.shape[0]
    r00, r01, r02, t0 = viewmat[0, 0], viewmat[0, 1], viewmat[0, 2], viewmat[0, 3]
    r10, r11, r12, t1 = viewmat[1, 0], viewmat[1, 1], viewmat[1, 2], viewmat[1, 3]
    r20, r21, r22, t2 = viewmat[2, 0], viewmat[2, 1], viewmat[2, 2], viewmat[2, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + FOV_MARGIN * tan_fovx
    lim_x_neg = cx / fx + FOV_MARGIN * tan_fovx
    lim_y_pos = (height - cy) / fy + FOV_MARGIN * tan_fovy
    lim_y_neg = cy / fy + FOV_MARGIN * tan_fovy
    log_thr = math.log(ALPHA_THRESHOLD)
    for i in nb.prange(n):
        drawn[i] = False
        px, py, pz = np.float64(means[i, 0]), np.float64(means[i, 1]), np.float64(means[i, 2])
        x = r00 * px + r01 * py + r02 * pz + t0
        y = r10 * px + r11 * py + r12 * pz + t1
        z = r20 * px + r21 * py + r22 * pz + t2
        if not (z >= near and z <= far):
            continue
        op = 1.0 / (1.0 + math.exp(-np.float64(opacity_logits[i])))
        if not (op >= ALPHA_THRESHOLD):
            continue
        a, b, c = _cov2d(viewmat, quats[i], log_scales[i], x, y, z, fx, fy, lim_x_pos, lim_x_neg,
                         lim_y_pos, lim_y_neg, eps2d)
        rz = 1.0 / z
        det = a * c - b * b
        if not (det > 0):
            continue
        mx = fx * x * rz + cx
        my = fy * y * rz + cy
        # The reference's box: opacity-aware extent, at most 3.33 sigma, per axis.
        log_ratio = max(math.log(op) - log_thr, 0.0)  # alpha >= 1/255 needs exponent <= log_ratio
        extend = min(math.sqrt(2.0 * log_ratio), MAX_EXTEND)
        radius_x = np.ceil(extend * math.sqrt(a))  # floats: a huge Gaussian must not overflow an int
        radius_y = np.ceil(extend * math.sqrt(c))
        if not (radius_x > 0 and radius_y > 0):  # the reference composites only radii > 0 on both axes
            continue
        if not (mx + radius_x > 0 and mx - radius_x < width and my + radius_y > 0 and my - radius_y < height):
            continue
        # Where alpha can reach 1/255 at all: the exponent 0.5 d^T Sigma^-1 d >= 0.5 dx^2 / Sigma_xx,
        # so |dx| <= sqrt(2 log_ratio Sigma_xx) (a hair more for rounding), and within the box.
        limit = log_ratio * 1.001 + 1e-3
        wx = min(radius_x, math.sqrt(2.0 * limit * a))
        wy = min(radius_y, math.sqrt(2.0 * limit * c))
        # Pixel k's centre is k + 0.5: the pixels with |k + 0.5 - m| <= w, clipped to the image.
        x0 = max(np.ceil(mx - wx - 0.5), 0.0)
        x1 = min(np.floor(mx + wx - 0.5), width - 1.0)
        y0 = max(np.ceil(my - wy - 0.5), 0.0)
        y1 = min(np.floor(my + wy - 0.5), height - 1.0)
        if not (x0 <= x1 and y0 <= y1):
            continue
        drawn[i] = True
        r = records[i]
        r[_MX] = mx
        r[_MY] = my
        r[_CA] = c / det
        r[_CB] = -b / det
        r[_CC] = a / det
        r[_OP] = op
        r[_R] = max(SH_C0 * np.float64(sh_dc[i, 0]) + 0.5, 0.0)
        r[_G] = max(SH_C0 * np.float64(sh_dc[i, 1]) + 0.5, 0.0)
        r[_B] = max(SH_C0 * np.float64(sh_dc[i, 2]) + 0.5, 0.0)
        r[_Z] = z
        depths[i] = z
        r[_L2] = 2.0 * limit
        r[_X0] = x0
        r[_Y0] = y0
        r[_X1] = x1
        r[_Y1] = y1


@nb.njit(cache=True, error_model="numpy")
def _depth_order(depths, drawn):
    """Indices of the drawn Gaussians, front to back: a stable LSD radix sort (11-bit digits) of the
    float32 depths' bits, which order like the depths since those are positive; ties keep index
    order, like the reference's stable sort."""
    n = drawn.shape[0]
    m = 0
    for i in range(n):
        if drawn[i]:
            m += 1
    ids = np.empty(m, np.int32)
    keys = np.empty(m, np.uint32)
    depth_bits = depths.view(np.uint32)
    k = 0
    for i in range(n):
        if drawn[i]:
            ids[k] = i
            keys[k] = depth_bits[i]
            k += 1
    ids2 = np.empty(m, np.int32)
    keys2 = np.empty(m, np.uint32)
    for shift in (0, 11, 22):
        counts = np.zeros(2049, np.int64)
        for k in range(m):
            counts[((keys[k] >> shift) & 0x7FF) + 1] += 1
        for d in range(2048):
            counts[d + 1] += counts[d]
        for k in range(m):
            d = (keys[k] >> shift) & 0x7FF
            j = counts[d]
            counts[d] = j + 1
            ids2[j] = ids[k]
            keys2[j] = keys[k]
        ids, ids2 = ids2, ids
        keys, keys2 = keys2, keys
    return ids


@nb.njit(parallel=True, cache=True, error_model="numpy")
def _gather(records, order, packed, rects):
    """packed[:m] = records[order] (random reads: the parallel part), and rects[:m] each one's tile
    rectangle [tx0, ty0, tx1, ty1] (inclusive)."""
    m = order.shape[0]
    for k in nb.prange(m):
        i = order[k]
        for f in range(_NFIELDS):
            packed[k, f] = records[i, f]
        rects[k, 0] = int(records[i, _X0]) // TILE_SIZE
        rects[k, 1] = int(records[i, _Y0]) // TILE_SIZE
        rects[k, 2] = int(records[i, _X1]) // TILE_SIZE
        rects[k, 3] = int(records[i, _Y1]) // TILE_SIZE


@nb.njit(cache=True, error_model="numpy")
def _bin(rects, tiles_x, tiles_y):
    """Per-tile lists of indices into the depth-sorted Gaussians (so every list is sorted too):
    tile t's Gaussians are lists[offsets[t]:offsets[t + 1]]."""
    m = rects.shape[0]
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(n_tiles + 1, np.int64)
    for k in range(m):
        for ty in range(rects[k, 1], rects[k, 3] + 1):
            for tx in range(rects[k, 0], rects[k, 2] + 1):
                counts[ty * tiles_x + tx + 1] += 1
    for t in range(n_tiles):
        counts[t + 1] += counts[t]
    offsets = counts
    cursor = offsets[:-1].copy()
    lists = np.empty(offsets[-1], np.int32)
    for k in range(m):
        for ty in range(rects[k, 1], rects[k, 3] + 1):
            for tx in range(rects[k, 0], rects[k, 2] + 1):
                t = ty * tiles_x + tx
                lists[cursor[t]] = k
                cursor[t] += 1
    return offsets, lists


def _sort_and_bin(records, depths, drawn, tiles_x, tiles_y):
    """The drawn Gaussians' records sorted front to back, and per-tile lists of indices into them:
    tile t's Gaussians are lists[offsets[t]:offsets[t + 1]], front to back."""
    order = _depth_order(depths, drawn)
    m = order.shape[0]
    packed = _scratch("packed", (m, _NFIELDS), np.float32)
    rects = _scratch("rects", (m, 4), np.int32)
    _gather(records, order, packed, rects)
    offsets, lists = _bin(rects, tiles_x, tiles_y)
    return packed, offsets, lists


@nb.njit(cache=True, error_model="numpy")
def _composite_tile(packed, lists, k0, k1, px0, py0, pw, ph, T, acc, alive):
    """Front-to-back compositing of one tile's Gaussians (lists[k0:k1]) at its pw x ph pixels.
    packed: the records flattened ([m * 16]); T [256] starts at 1 and ends as the transmittance,
    negated where the pixel stopped early; acc [4 * 256] gets sum alpha_i T_i of r, g, b, depth
    (at p, 256 + p, 512 + p, 768 + p); alive [16] counts each row's pixels that have not stopped.
    Unsigned indices spare numba's negative-index checks."""
    remaining = pw * ph
    for ly in range(TILE_SIZE):
        alive[ly] = pw if ly < ph else 0
    cx0 = np.float32(px0) + _F_HALF  # centre of the tile's first pixel
    cy0 = np.float32(py0) + _F_HALF
    for k in range(k0, k1):
        g = np.uint64(lists[k]) * np.uint64(_NFIELDS)
        # Offsets from the first pixel's centre: dx = mx - lx at pixel column lx.
        mx, my = packed[g + _MX] - cx0, packed[g + _MY] - cy0
        ca, cb, cc, op = packed[g + _CA], packed[g + _CB], packed[g + _CC], packed[g + _OP]
        l2 = packed[g + _L2]
        gx0 = max(int(packed[g + _X0]) - px0, 0)
        gx1 = min(int(packed[g + _X1]) - px0, pw - 1)
        gy0 = max(int(packed[g + _Y0]) - py0, 0)
        gy1 = min(int(packed[g + _Y1]) - py0, ph - 1)
        narrow = gx1 - gx0 < _NARROW
        inv_ca = _F_ONE / ca
        hca = _F_HALF * ca
        for ly in range(gy0, gy1 + 1):
            if alive[ly] == 0:
                continue
            dy = my - np.float32(ly)
            cbdy = cb * dy
            xs, xe = gx0, gx1
            if not narrow:
                # This row's span where the exponent can be under the limit:
                # ca dx^2 + 2 cb dy dx + cc dy^2 <= l2, a quadratic in dx = mx - lx.
                disc = cbdy * cbdy - ca * (cc * dy * dy - l2)
                if disc < _F_ZERO:
                    continue
                s = np.sqrt(disc)
                lo = mx + (cbdy - s) * inv_ca
                hi = mx + (cbdy + s) * inv_ca
                # Clamped to the tile (+-2 px; a NaN gives the whole box), then ceil / floor by
                # truncating positive numbers.
                lo = lo if lo > _F_M2 else _F_M2
                lo = lo if lo < _F_18 else _F_18
                hi = hi if hi < _F_18 else _F_18
                hi = hi if hi > _F_M2 else _F_M2
                xs = max(gx0, 64 - int(_F_64 - lo))
                xe = min(gx1, int(hi + _F_64) - 64)
            hcdy2 = _F_HALF * cc * dy * dy
            row = ly * TILE_SIZE
            for lx in range(xs, xe + 1):
                p = np.uint64(row + lx)
                Tp = T[p]
                if Tp < _F_ZERO:  # this pixel has stopped
                    continue
                dx = mx - np.float32(lx)
                sigma = (hca * dx + cbdy) * dx + hcdy2  # 0.5 (a dx^2 + c dy^2) + b dx dy
                if sigma < _F_ZERO:
                    continue
                alpha = min(_F_MAX_ALPHA, op * np.exp(-sigma))
                if alpha < _F_THRESHOLD:
                    continue
                next_T = Tp * (_F_ONE - alpha)
                if next_T <= _F_T_STOP:  # stop before this Gaussian
                    T[p] = -Tp
                    alive[ly] -= 1
                    remaining -= 1
                    continue
                w = alpha * Tp
                acc[p] += w * packed[g + _R]
                acc[p + np.uint64(256)] += w * packed[g + _G]
                acc[p + np.uint64(512)] += w * packed[g + _B]
                acc[p + np.uint64(768)] += w * packed[g + _Z]
                T[p] = next_T
        if remaining == 0:
            break


@nb.njit(parallel=True, cache=True, error_model="numpy")
def _composite(packed, offsets, lists, background, width, height, tiles_x, workers,
               out_rgb, out_alpha, out_depth):
    """All tiles, in parallel. numba's prange splits its range statically (a chunk size does not
    make it dynamic), so the loop runs over `workers` (the thread count), each taking every
    workers-th tile from the list sorted by cost (Gaussians in the tile), most expensive first:
    balanced within a tile or two, where plain prange over the tiles left one of 2 threads idle a
    third of the time (the face is in the middle)."""
    n_tiles = offsets.shape[0] - 1
    flat = packed.reshape(-1)
    cost = np.empty(n_tiles, np.int64)
    for t in range(n_tiles):
        cost[t] = offsets[t] - offsets[t + 1]  # negated: ascending order puts the most expensive first
    order = np.argsort(cost, kind="mergesort")
    workers = max(min(workers, n_tiles), 1)
    for j in nb.prange(workers):
        T = np.empty(TILE_SIZE * TILE_SIZE, np.float32)
        acc = np.empty(4 * TILE_SIZE * TILE_SIZE, np.float32)
        alive = np.empty(TILE_SIZE, np.int64)
        for idx in range(j, n_tiles, workers):
            t = order[idx]
            ty, tx = t // tiles_x, t % tiles_x
            px0, py0 = tx * TILE_SIZE, ty * TILE_SIZE
            pw = min(TILE_SIZE, width - px0)
            ph = min(TILE_SIZE, height - py0)
            T[:] = _F_ONE
            acc[:] = _F_ZERO
            _composite_tile(flat, lists, offsets[t], offsets[t + 1], px0, py0, pw, ph, T, acc, alive)
            for ly in range(ph):
                for lx in range(pw):
                    p = ly * TILE_SIZE + lx
                    Tp = abs(T[p])
                    a = _F_ONE - Tp
                    y, x = py0 + ly, px0 + lx
                    out_rgb[y, x, 0] = acc[p] + Tp * background[0]
                    out_rgb[y, x, 1] = acc[256 + p] + Tp * background[1]
                    out_rgb[y, x, 2] = acc[512 + p] + Tp * background[2]
                    out_alpha[y, x, 0] = a
                    out_depth[y, x, 0] = acc[768 + p] / max(a, _F_TINY)


# Scratch buffers reused from frame to frame (fresh ones cost page faults: a few ms per frame at
# 87k Gaussians); only touched under _LOCK.
_SCRATCH: dict[str, np.ndarray] = {}


def _scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    size = int(np.prod(shape))
    buf = _SCRATCH.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = _SCRATCH[name] = np.empty(max(size, 1), dtype)
    return buf[:size].reshape(shape)


def _render_image(means, log_scales, quats, opacity_logits, sh_dc, viewmat, K, width, height, background,
                  near_plane, far_plane, eps2d, out_rgb, out_alpha, out_depth):
    """One image from numpy float32 arrays, into out_rgb [H, W, 3], out_alpha and out_depth [H, W, 1]."""
    n = means.shape[0]
    records = _scratch("records", (n, _NFIELDS), np.float32)
    depths = _scratch("depths", (n,), np.float32)
    drawn = _scratch("drawn", (n,), np.bool_)
    _project(means, log_scales, quats, opacity_logits, sh_dc, viewmat, K, width, height, near_plane,
             far_plane, eps2d, records, depths, drawn)
    tiles_x, tiles_y = -(-width // TILE_SIZE), -(-height // TILE_SIZE)
    packed, offsets, lists = _sort_and_bin(records, depths, drawn, tiles_x, tiles_y)
    _composite(packed, offsets, lists, background, width, height, tiles_x, nb.get_num_threads(),
               out_rgb, out_alpha, out_depth)


def _np32(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


def render_compiled(
    means: Tensor,  # [B, N, 3]
    log_scales: Tensor,  # [B, N, 3] (natural log; exp is taken here)
    quats: Tensor,  # [B, N, 4] (w, x, y, z), any non-zero length
    opacity_logits: Tensor,  # [B, N] (sigmoid is taken here)
    sh_dc: Tensor,  # [B, N, 3] degree-0 SH; rgb = max(SH_C0 sh_dc + 0.5, 0) as Gaussians.rgbs
    viewmats: Tensor,  # [B, C, 4, 4]
    Ks: Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    backgrounds: Tensor,  # [B, C, 3]
    near_plane: float,
    far_plane: float,
    eps2d: float = EPS2D,
) -> tuple[Tensor, Tensor, Tensor]:
    """`render_reference`'s outputs (rgb [B, C, H, W, 3], alpha and depth [B, C, H, W, 1]) from the
    Gaussians' raw parameters (activated inside, like `Gaussians.scales` etc.), without gradients,
    as float32 tensors on the CPU."""
    B, C = viewmats.shape[:2]
    width, height = int(width), int(height)
    scene = [_np32(t) for t in (means, log_scales, quats, opacity_logits, sh_dc)]
    bgs = _np32(backgrounds)
    views = viewmats.detach().to("cpu", torch.float64).numpy()
    Kmats = Ks.detach().to("cpu", torch.float64).numpy()
    rgb = np.empty((B, C, height, width, 3), np.float32)
    alpha = np.empty((B, C, height, width, 1), np.float32)
    depth = np.empty((B, C, height, width, 1), np.float32)
    with _LOCK:
        for b in range(B):
            for c in range(C):
                _render_image(*(a[b] for a in scene), views[b, c], Kmats[b, c], width, height, bgs[b, c],
                              float(near_plane), float(far_plane), float(eps2d), rgb[b, c], alpha[b, c], depth[b, c])
    return torch.from_numpy(rgb), torch.from_numpy(alpha), torch.from_numpy(depth)
