"""StyleGAN2 residual discriminator on single images, with a switch for how it sees the camera.

    image [B, 3, R, R] in [-1, 1]
      -> fromRGB (1x1 conv) -> residual blocks, each halving the resolution, down to 4x4
      -> minibatch-std (group 4) -> 3x3 conv -> fc -> logit [B]

Pose handling (`pose` argument):
  "contrastive"  GSGAN: the logit ignores the camera; a pose branch embeds the image features (64-d)
                 and a camera branch embeds the 25-d label (64-d); `infonce_pose_loss` matches them.
  "projection"   EG3D / CGS-GAN: the logit is <fc features, mapping(c)> / sqrt(cmap_dim).
  "none"         no camera at all.

Channels per resolution: min(channel_base // res, channel_max) (reference: 32768, 512).
Weights use the equalised learning rate of StyleGAN2 (scaled at run time, N(0, 1) init).
Every setting is one field of `DiscriminatorConfig`; `build_discriminator(config)` builds it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsgan_core.errors import ConfigError

POSE_MODES = ("contrastive", "projection", "none")
LABEL_DIM = 25


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The discriminator's settings; the defaults are the reference's (StyleGAN2 / GSGAN)."""

    resolution: int = 256  # input images are resolution x resolution (a power of two >= 8)
    pose: str = "contrastive"  # how D sees the camera: contrastive | projection | none (see above)
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    mbstd_group: int = 4  # minibatch-std group size
    pose_dim: int = 64  # contrastive embedding size; also projection's cmap_dim

    def __post_init__(self):
        if self.pose not in POSE_MODES:
            raise ConfigError(f"unknown discriminator pose mode {self.pose!r}; choose one of {POSE_MODES}")
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ConfigError(f"discriminator resolution must be a power of two >= 8, got {self.resolution}")
        for name in ("channel_base", "channel_max", "mbstd_group", "pose_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"discriminator {name} must be >= 1, got {getattr(self, name)}")
        if self.channel_base < 4:  # the 4x4 stage must keep at least one channel
            raise ConfigError(f"discriminator channel_base must be >= 4, got {self.channel_base}")

    def channels(self, resolution: int) -> int:
        return max(min(self.channel_base // resolution, self.channel_max), 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DiscriminatorConfig":
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown discriminator config keys: {unknown}")
        return cls(**data)


# The discriminator that trains beside each generator preset (models/config.py PRESETS): the
# reference's, except at test size, where a full-width D would dwarf the generator (and its
# training state would weigh some 200 MB).
DISCRIMINATOR_PRESETS: dict[str, DiscriminatorConfig] = {
    "tiny": DiscriminatorConfig(channel_base=1024, channel_max=64),
    "gsgan-tiny": DiscriminatorConfig(channel_base=1024, channel_max=64),
}


def discriminator_preset(name: str, **overrides) -> DiscriminatorConfig:
    """The discriminator of generator preset `name` (the reference's for most), fields replaced by `overrides`."""
    try:
        return dataclasses.replace(DISCRIMINATOR_PRESETS.get(name, DiscriminatorConfig()), **overrides)
    except TypeError as err:
        raise ConfigError(f"bad discriminator override: {err}") from None


# ====================================================================== convolution with fast R1
# R1 differentiates D's input gradient with respect to D's weights: a double backward through every
# convolution. PyTorch's built-in double backward of conv2d computes one of its terms as a convolution
# with the gradient image as the *kernel*, a shape cuDNN has no fast kernel for: at 256x256 these calls
# alone take seconds per R1 step, even on a fast GPU. As StyleGAN2-ADA's conv2d_gradfix does, the three
# operations below (conv, its input gradient, its weight gradient) define each other's gradients, so every
# order of differentiation runs ordinary cuDNN forward/backward-data/backward-weight kernels.
# Stride 1, groups 1, "same" padding only: that is all this discriminator uses.
class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, padding: int):  # [B, Cin, H, W], [Cout, Cin, k, k] -> [B, Cout, H, W]
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, padding=padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = _Conv2dGradInput.apply(grad_out, weight, ctx.padding) if ctx.needs_input_grad[0] else None
        grad_w = _Conv2dGradWeight.apply(grad_out, x, weight.shape, ctx.padding) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None


class _Conv2dGradInput(torch.autograd.Function):
    """conv_transpose2d(grad_out, weight): the input gradient of _Conv2d, itself differentiable."""

    @staticmethod
    def forward(ctx, grad_out, weight, padding: int):
        ctx.save_for_backward(grad_out, weight)
        ctx.padding = padding
        return F.conv_transpose2d(grad_out, weight, padding=padding)

    @staticmethod
    def backward(ctx, g):  # <g, convT(a, w)> = <conv(g, w), a>
        grad_out, weight = ctx.saved_tensors
        g_grad_out = _Conv2d.apply(g, weight, ctx.padding) if ctx.needs_input_grad[0] else None
        g_weight = _Conv2dGradWeight.apply(grad_out, g, weight.shape, ctx.padding) if ctx.needs_input_grad[1] else None
        return g_grad_out, g_weight, None


class _Conv2dGradWeight(torch.autograd.Function):
    """The weight gradient of _Conv2d (cuDNN backward-weight), itself differentiable."""

    @staticmethod
    def forward(ctx, grad_out, x, weight_shape, padding: int):
        ctx.save_for_backward(grad_out, x)
        ctx.padding = padding
        weight = x.new_empty(weight_shape)  # only its shape is read
        _, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out, x, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], 1, [False, True, False]
        )
        return grad_w

    @staticmethod
    def backward(ctx, g):  # grad_w is bilinear in (grad_out, x): <g, gw> = <grad_out, conv(x, g)>
        grad_out, x = ctx.saved_tensors
        g_grad_out = _Conv2d.apply(x, g, ctx.padding) if ctx.needs_input_grad[0] else None
        g_x = _Conv2dGradInput.apply(grad_out, g, ctx.padding) if ctx.needs_input_grad[1] else None
        return g_grad_out, g_x, None, None


def conv2d_same(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Stride-1 'same' convolution with fast derivatives of every order (see above)."""
    y = _Conv2d.apply(x, weight, weight.shape[-1] // 2)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


class EqualConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale = 1 / math.sqrt(c_in * kernel * kernel)
        self.down = down

    def forward(self, x: Tensor) -> Tensor:
        if self.down:  # blur then subsample, as StyleGAN2 does, so downsampling does not alias
            x = blur_downsample(x)
        return conv2d_same(x, self.weight * self.scale, self.bias)


class EqualDense(nn.Module):
    def __init__(self, c_in: int, c_out: int, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale, self.lr_mul = lr_mul / math.sqrt(c_in), lr_mul

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


def lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2) * math.sqrt(2)  # gain sqrt(2) keeps activations at unit variance


def blur_downsample(x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, C, H/2, W/2]
    """StyleGAN2's [1, 3, 3, 1] FIR filter (zero padding 1), then every second pixel.

    Written as shifted sums rather than a convolution: elementwise ops differentiate to any order
    at memory speed, where R1's double backward through a strided convolution did not. Only the
    kept (even) outputs are computed: output i reads padded samples 2i .. 2i+3, so each pass
    reads strided slices and writes half as much (7x faster than filtering every pixel first).
    """
    x = F.pad(x, (1, 1, 1, 1))
    W = x.shape[-1] - 3
    x = (x[..., 0:W:2] + 3 * x[..., 1 : W + 1 : 2] + 3 * x[..., 2 : W + 2 : 2] + x[..., 3 : W + 3 : 2]) / 8
    H = x.shape[-2] - 3
    x = (x[..., 0:H:2, :] + 3 * x[..., 1 : H + 1 : 2, :] + 3 * x[..., 2 : H + 2 : 2, :] + x[..., 3 : H + 3 : 2, :]) / 8
    return x


class DBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsamples) plus a 1x1 downsampling skip, / sqrt(2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = EqualConv2d(c_in, c_in, 3)
        self.conv1 = EqualConv2d(c_in, c_out, 3, down=True)
        self.skip = EqualConv2d(c_in, c_out, 1, bias=False, down=True)

    def forward(self, x: Tensor) -> Tensor:
        y = lrelu(self.conv1(lrelu(self.conv0(x))))
        return (self.skip(x) + y) / math.sqrt(2)


def minibatch_std(x: Tensor, group_size: int = 4) -> Tensor:  # [B, C, H, W] -> [B, C + 1, H, W]
    """Appends the std of features over groups of samples: lets D see a lack of variety."""
    B, C, H, W = x.shape
    G = min(group_size, B)
    while B % G:  # the last batch of an epoch or a tiny test batch may not divide by 4
        G -= 1
    y = x.reshape(G, B // G, C, H, W)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [B // G]
    y = y.reshape(1, B // G, 1, 1, 1).expand(G, -1, 1, H, W).reshape(B, 1, H, W)
    return torch.cat([x, y], dim=1)


class DOutput(NamedTuple):
    logits: Tensor  # [B] realness
    image_pose: Tensor | None  # [B, pose_dim] ("contrastive" only)
    camera_pose: Tensor | None  # [B, pose_dim] ("contrastive" only)


class Discriminator(nn.Module):
    def __init__(
        self,
        resolution: int,
        pose: str = "contrastive",
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group: int = 4,
        pose_dim: int = 64,  # contrastive embedding size; also projection's cmap_dim
    ):
        super().__init__()
        self.config = DiscriminatorConfig(resolution, pose, channel_base, channel_max, mbstd_group, pose_dim)
        self.resolution, self.pose, self.mbstd_group = resolution, pose, mbstd_group
        channels = self.config.channels
        self.from_rgb = EqualConv2d(3, channels(resolution), 1)
        resolutions = [2**i for i in range(int(math.log2(resolution)), 2, -1)]  # R, R/2, ..., 8
        self.blocks = nn.ModuleList(DBlock(channels(r), channels(r // 2)) for r in resolutions)
        c4 = channels(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualDense(c4 * 16, c4)
        self.out = EqualDense(c4, pose_dim if pose == "projection" else 1)
        if pose == "contrastive":
            self.image_pose = nn.Sequential(EqualDense(c4, c4), nn.LeakyReLU(0.2), EqualDense(c4, pose_dim))
        if pose != "none":  # the label's embedding: the projection vector, or the camera branch
            self.camera_embed = nn.Sequential(
                EqualDense(LABEL_DIM, pose_dim), nn.LeakyReLU(0.2), EqualDense(pose_dim, pose_dim)
            )
        self.pose_dim = pose_dim

    def forward(
        self,
        images: Tensor,  # [B, 3, R, R] in [-1, 1]
        labels: Tensor | None = None,  # [B, 25] camera labels (needed unless pose == "none")
    ) -> DOutput:
        x = lrelu(self.from_rgb(images))
        for block in self.blocks:
            x = block(x)
        x = lrelu(self.conv(minibatch_std(x, self.mbstd_group)))
        features = lrelu(self.fc(x.flatten(1)))  # [B, c4]
        out = self.out(features)
        if self.pose == "none":
            return DOutput(out.squeeze(1), None, None)
        if labels is None:
            raise ValueError(f"a discriminator with pose={self.pose!r} needs camera labels")
        camera = self.camera_embed(labels)  # [B, pose_dim]
        if self.pose == "projection":
            # EG3D normalises the camera embedding's second moment before the dot product
            camera = camera * (camera.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
            return DOutput((out * camera).sum(dim=1) / math.sqrt(self.pose_dim), None, None)
        return DOutput(out.squeeze(1), self.image_pose(features), camera)


def build_discriminator(config: DiscriminatorConfig) -> Discriminator:
    return Discriminator(**config.to_dict())
