"""What an inversion minimises and what its evaluation reports.

    image_loss      pixel L1 / L2 (weighted by the target's alpha where it has one) + alpha L1
                    + an optional perceptual term, per image of a batch
    Perceptual      VGG16 feature distance (LPIPS's layers, unit-normalised channels, equal weights),
                    from a weights file given by path: nothing is ever downloaded
    psnr, ssim      per image, for images in [0, 1] (SSIM: Wang et al. 2004, an 11-tap Gaussian window
                    of sigma 1.5, K1 = 0.01, K2 = 0.03, valid filtering, averaged over the channels)
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsgan_core.errors import ConfigError, PathError

PIXEL_LOSSES = ("l1", "l2")
# torchvision's vgg16().features: numbers are output channels, "M" a 2x2 max-pool
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in that numbering
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PERCEPTUAL_MIN_SIZE = 64  # smaller images are upsampled first: VGG's fifth block needs some pixels


class PerceptualWeightsError(PathError):
    """A perceptual-loss weights file is missing or does not hold VGG16's convolutions."""


class Perceptual(nn.Module):
    """LPIPS-style distance on VGG16 features: at each of LPIPS's five layers, channels are scaled to
    unit length per pixel, the squared difference is averaged over pixels and summed over channels,
    then the five layers are averaged. Without LPIPS's learned channel weights ("baseline" LPIPS).

    `load(path)` reads torchvision's vgg16 state dict (`features.N.weight` / `.bias`, the classifier
    is ignored) from .safetensors or .pth/.pt (read with weights_only=True: nothing is unpickled
    beyond tensors)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "Perceptual":
        path = PerceptualWeightsError.check_file(path, "a weights file")
        try:
            if path.suffix.lower() == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise PerceptualWeightsError(path, f"cannot be read as VGG16 weights ({type(err).__name__}: "
                                               f"{str(err).splitlines()[0][:160] if str(err) else ''})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise PerceptualWeightsError(path, "does not hold a state dict")
        net = cls()
        wanted = net.features.state_dict()
        found = {}
        for key, value in state.items():
            name = key[len("features."):] if key.startswith("features.") else key
            if name in wanted:
                found[name] = value
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise PerceptualWeightsError(path, f"is not torchvision's VGG16: {len(missing)} of its {len(wanted)} "
                                               f"convolution tensors are missing (e.g. features.{missing[0]})")
        for name, value in found.items():
            if tuple(value.shape) != tuple(wanted[name].shape):
                raise PerceptualWeightsError(path, f"features.{name} has shape {list(value.shape)}; VGG16 needs "
                                                   f"{list(wanted[name].shape)}")
        net.features.load_state_dict({k: v.float() for k, v in found.items()})
        return net.to(device)

    def _taps(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                out.append(x)
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:  # [B, 3, H, W] in [0, 1] twice -> [B]
        if a.shape[-1] < PERCEPTUAL_MIN_SIZE:
            size = (PERCEPTUAL_MIN_SIZE, PERCEPTUAL_MIN_SIZE)
            a, b = (F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in (a, b))
        total = a.new_zeros(a.shape[0])
        for fa, fb in zip(self._taps(a), self._taps(b)):
            na = fa / (fa.square().sum(1, keepdim=True) + 1e-10).sqrt()
            nb = fb / (fb.square().sum(1, keepdim=True) + 1e-10).sqrt()
            total = total + (na - nb).square().sum(1).mean((1, 2))
        return total / len(LPIPS_TAPS)


def image_loss(
    rgb: Tensor,  # [B, 3, R, R] the renderings, on `background`
    alpha: Tensor,  # [B, 1, R, R] their coverage
    target_rgb: Tensor,  # [B, 3, R, R] the targets composited on the same background
    target_alpha: Tensor | None,  # [B, 1, R, R] or None (no mask)
    pixel: str = "l1",
    alpha_weight: float = 1.0,  # only where the target has alpha and the generator no background
    perceptual: Perceptual | None = None,
    perceptual_weight: float = 1.0,
    fit_alpha: bool = True,
) -> Tensor:  # [B]
    """The image term of the inversion, one value per image (sum it for the batch's gradient)."""
    if pixel not in PIXEL_LOSSES:
        raise ConfigError(f"pixel loss must be one of {', '.join(PIXEL_LOSSES)}, got {pixel!r}")
    diff = rgb - target_rgb
    per_pixel = diff.abs() if pixel == "l1" else diff.square()  # [B, 3, R, R]
    if target_alpha is None:
        loss = per_pixel.mean((1, 2, 3))
    else:  # the mask: colour counts where the target has it; the alpha term handles the outside
        mask = target_alpha
        loss = (per_pixel * mask).sum((1, 2, 3)) / (3 * mask.sum((1, 2, 3)).clamp_min(1.0))
        if fit_alpha and alpha_weight > 0:
            loss = loss + alpha_weight * (alpha - target_alpha).abs().mean((1, 2, 3))
    if perceptual is not None and perceptual_weight > 0:
        loss = loss + perceptual_weight * perceptual(rgb, target_rgb)
    return loss


def psnr(a: Tensor, b: Tensor) -> Tensor:  # [B, C, H, W] in [0, 1] -> [B] dB
    mse = (a.float() - b.float()).square().mean((1, 2, 3))
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(size: int, sigma: float, device, dtype) -> Tensor:  # [size]
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-x.square() / (2 * sigma**2))
    return w / w.sum()


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:  # [B, C, H, W] in [0, 1] -> [B]
    """Structural similarity (Wang et al. 2004) per image: the mean SSIM map over pixels and channels."""
    a, b = a.double(), b.double()
    C = a.shape[1]
    if min(a.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {list(a.shape[-2:])}")
    g = _gaussian_window(window, sigma, a.device, a.dtype)
    kx, ky = g.view(1, 1, 1, -1).repeat(C, 1, 1, 1), g.view(1, 1, -1, 1).repeat(C, 1, 1, 1)

    def blur(x: Tensor) -> Tensor:  # separable, 'valid'
        return F.conv2d(F.conv2d(x, kx, groups=C), ky, groups=C)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return ssim_map.mean((1, 2, 3)).float()
