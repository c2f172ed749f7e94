"""SWD on Laplacian pyramids; gsgan-metrics end to end; FID's clear message without weights."""

import json

import pytest
import torch

from gsgan_core.cli import metrics_main
from gsgan_core.data.heads import make_heads_dataset
from gsgan_core.io.checkpoint import save_checkpoint
from gsgan_core.metrics.fid import FIDUnavailable, inception_model
from gsgan_core.metrics.swd import laplacian_pyramid, sliced_wasserstein
from gsgan_core.models.config import preset
from gsgan_core.models.generator import Generator


def smooth_images(n, seed, frequency):
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 1, 32)
    phase = torch.rand(n, 3, 1, 1, generator=g) * 6.28
    return torch.sin(frequency * 6.28 * x[None, None, :, None] + phase) * torch.cos(6.28 * x[None, None, None, :])


def test_pyramid_reconstructs_and_swd_ranks_distributions():
    images = torch.randn(2, 3, 32, 32)
    pyramid = laplacian_pyramid(images, 2)
    assert [p.shape[-1] for p in pyramid] == [32, 16]
    upsampled = torch.nn.functional.interpolate(pyramid[1], scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(pyramid[0] + upsampled, images, atol=1e-5)  # band-pass + low-pass = the image
    a, b = smooth_images(16, 0, 2), smooth_images(16, 1, 2)
    noisy = b + 0.5 * torch.randn_like(b)
    same = sliced_wasserstein(a, b)["mean"]
    different = sliced_wasserstein(a, noisy)["mean"]
    assert 0 <= same < different / 2
    assert sliced_wasserstein(a, b, seed=3)["mean"] != same  # random patches and projections depend on the seed
    with pytest.raises(ValueError):
        sliced_wasserstein(a, a[:8])


@pytest.mark.gpu
def test_swd_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: torch.cuda.is_available() is False on this machine")
    a, b = smooth_images(16, 0, 2), smooth_images(16, 1, 3)
    cpu = sliced_wasserstein(a, b, seed=1)
    gpu = sliced_wasserstein(a, b, seed=1, device="cuda")  # same patches and projections (CPU generator)
    assert gpu["levels"] == pytest.approx(cpu["levels"], rel=1e-3)


def test_fid_without_weights_says_so(tmp_path):
    with pytest.raises(FIDUnavailable) as caught:
        inception_model(tmp_path / "pt_inception.pth", "cpu")
    assert "--fid-weights" in str(caught.value) or "pytorch-fid" in str(caught.value)


def test_metrics_command_swd_with_floor_and_fid_message(tmp_path, capsys):
    data = tmp_path / "heads.zip"
    make_heads_dataset(data, 8, 16, seed=0, processes=1, progress=False)
    torch.manual_seed(0)
    ckpt = tmp_path / "g.safetensors"
    save_checkpoint(ckpt, Generator(preset("tiny", image_resolution=16)),
                    dataset={"name": "heads", "resolution": 16})
    assert metrics_main(["--network", str(ckpt), "--data", str(data), "--num", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num"] == 4 and result["swd"] > result["swd_real_floor"] > 0
    assert metrics_main(["--network", str(ckpt), "--data", str(data), "--metrics", "swd,fid"]) == 1
    assert "--fid-weights" in capsys.readouterr().err
