"""The loss terms of training, as plain functions (model doc, section 5).

    G: softplus(-D(fake)) + pose_weight * InfoNCE(fake) + lambda_c * center + lambda_knn * knn
    D: softplus(D(fake)) + softplus(-D(real)) + pose_weight * InfoNCE(real) + lazy R1
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def g_nonsaturating(fake_logits: Tensor) -> Tensor:  # [B] -> []
    return F.softplus(-fake_logits).mean()


def d_logistic(real_logits: Tensor, fake_logits: Tensor) -> Tensor:  # [B], [B] -> []
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_images: Tensor, real_logits: Tensor) -> Tensor:  # [B, 3, R, R], [B] -> [B]
    """||d D(x) / dx||^2 per real image; real_images must require grad and feed real_logits."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3))


def center_loss(anchor_means: Tensor) -> Tensor:  # [B, N, 3] level-0 anchors -> []
    """||mean of the level-0 anchors||^2 / 3: keeps the object centred where the cameras look."""
    return anchor_means.mean(dim=1).square().sum(dim=-1).mean() / 3


def knn_loss(anchor_means: Tensor, k: int) -> Tensor:  # [B, N, 3] -> []
    """Mean squared distance from each level-0 anchor to its k nearest others: no stray anchors."""
    k = min(k, anchor_means.shape[1] - 1)
    squared = torch.cdist(anchor_means, anchor_means).square()  # [B, N, N]
    nearest = squared.topk(k + 1, dim=-1, largest=False).values[..., 1:]  # drop the anchor itself
    return nearest.mean()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient of the gathered rows, then keeps
    this process's own rows (all_reduce works on gloo and NCCL alike)."""

    @staticmethod
    def forward(ctx, x):  # [B, D] -> [world * B, D]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):  # [world * B, D] -> [B, D]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        B = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * B : (dist.get_rank() + 1) * B]


def _gather_with_grad(x: Tensor) -> Tensor:  # [B, D] on each process -> [world * B, D]
    """All processes' rows, in rank order; gradients flow back to each process's own rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x  # one process: nothing to gather (the reference code crashed here)
    return _GatherWithGrad.apply(x)


def infonce_pose_loss(
    image_pose: Tensor,  # [B, D] D's embedding of each image
    camera_pose: Tensor,  # [B, D] D's embedding of each image's camera label
    temperature: float = 0.1,
) -> Tensor:  # []
    """GSGAN's contrastive pose loss: image i must be most similar (cosine) to camera i.

    Under DDP the cameras of every process are the candidates, so each image is contrasted with
    the whole global batch, as with one big GPU; on one process it is the local batch.
    """
    image_pose = F.normalize(image_pose, dim=1)
    camera_all = F.normalize(_gather_with_grad(camera_pose), dim=1)  # [world * B, D]
    logits = image_pose @ camera_all.T / temperature  # [B, world * B]
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    targets = torch.arange(image_pose.shape[0], device=image_pose.device) + rank * image_pose.shape[0]
    return F.cross_entropy(logits, targets)


def blur_images(images: Tensor, sigma: float) -> Tensor:  # [B, C, H, W] -> same
    """Separable Gaussian blur of D's input (faded out early in training); sigma in pixels."""
    if sigma <= 0:
        return images
    radius = int(math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma).square())
    kernel = kernel / kernel.sum()
    B, C, H, W = images.shape
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")  # works for any radius
    # channels folded into the batch: one-channel convolutions double-backward (R1) fast, grouped ones do not
    padded = padded.reshape(B * C, 1, H + 2 * radius, W + 2 * radius)
    out = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    return out.view(B, C, H, W)


def blur_sigma_at(kimg: float, sigma0: float, fade_kimg: float, resolution: int) -> float:
    """Linear fade from sigma0 (pixels at 256x256, scaled to `resolution`) to 0 over fade_kimg."""
    if fade_kimg <= 0:
        return 0.0
    return sigma0 * resolution / 256 * max(1.0 - kimg / fade_kimg, 0.0)


def ema_beta(batch: int, nimg: int, ema_kimg: float, rampup: float) -> float:
    """Per-step decay of G_ema: half-life ema_kimg, shorter early on (StyleGAN2-ADA's ramp-up)."""
    ema_nimg = ema_kimg * 1000
    if rampup > 0:
        ema_nimg = min(ema_nimg, nimg * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))
