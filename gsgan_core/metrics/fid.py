"""FID through the maintained `pytorch-fid` package, from a local Inception weights file only.

Nothing is downloaded: pass the FID Inception weights (pytorch-fid's `pt_inception-2015-12-05-*.pth`,
or the same tensors as .safetensors). A .pth is read with torch.load(weights_only=True), which
refuses anything but plain tensors. Without the package or the file, `FIDUnavailable` says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gsgan_core.errors import GsganError

INSTALL_HINT = "pip install 'pytorch-fid>=0.3' (it brings torchvision and scipy)"
WEIGHTS_HINT = ("FID needs the Inception weights as a local file: get pytorch-fid's "
                "pt_inception-2015-12-05-6726825d.pth once and pass --fid-weights FILE")


class FIDUnavailable(GsganError):
    """FID cannot be computed here: the library or the weights file is missing."""


def _load_weights(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FIDUnavailable(f"{path}: Inception weights file not found. {WEIGHTS_HINT}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a non-tensor pickle, a truncated file...
        raise FIDUnavailable(f"{path}: not a plain-tensor Inception weights file ({err})") from None


def inception_model(weights_path: str | Path, device) -> torch.nn.Module:
    try:
        from pytorch_fid import inception as fid_inception
    except ImportError:
        raise FIDUnavailable(f"FID needs the pytorch-fid package: {INSTALL_HINT}") from None
    state = _load_weights(Path(weights_path))
    # pytorch-fid fetches its weights by URL inside fid_inception_v3(); hand it the local tensors instead.
    original = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    finally:
        fid_inception.load_state_dict_from_url = original
    return model.eval().to(device)


@torch.no_grad()
def inception_features(model, images: Tensor, batch: int = 50) -> np.ndarray:  # [N, 3, R, R] in [-1, 1]
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch):
        x = (images[start : start + batch].to(device).float() + 1) / 2  # pytorch-fid takes [0, 1]
        out.append(model(x)[0].squeeze(-1).squeeze(-1).cpu().numpy())
    return np.concatenate(out)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    sigma_a, sigma_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    return float(calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b))


def fid(images_a: Tensor, images_b: Tensor, weights_path: str | Path, device="cpu") -> float:
    model = inception_model(weights_path, device)
    return frechet_distance(inception_features(model, images_a), inception_features(model, images_b))
