"""Discriminator shapes and pose modes; loss terms, including InfoNCE on one process."""

import pytest
import torch

from gsgan_core.models.discriminator import Discriminator, minibatch_std
from gsgan_core.train import losses

SMALL = dict(channel_base=512, channel_max=64)


@pytest.mark.parametrize("pose", ["contrastive", "projection", "none"])
def test_pose_modes_shapes_and_gradients(pose):
    torch.manual_seed(0)
    D = Discriminator(32, pose, **SMALL)
    images = torch.randn(4, 3, 32, 32, requires_grad=True)
    labels = torch.randn(4, 25)
    out = D(images, labels)
    assert out.logits.shape == (4,)
    if pose == "contrastive":
        assert out.image_pose.shape == (4, 64) and out.camera_pose.shape == (4, 64)
    else:
        assert out.image_pose is None and out.camera_pose is None
    grad_labels = torch.autograd.grad(out.logits.sum(), images)[0]
    assert grad_labels.abs().sum() > 0
    if pose == "projection":  # the logit depends on the camera
        assert not torch.allclose(D(images, labels).logits, D(images, labels + 1).logits)
    else:  # the logit does not
        assert torch.allclose(D(images, labels).logits, D(images, torch.randn(4, 25)).logits)


def test_channels_follow_the_reference_rule():
    D = Discriminator(256, "none")  # channel_base 32768, max 512
    assert D.from_rgb.weight.shape[0] == 128  # 32768 / 256
    assert D.blocks[-1].conv1.weight.shape[0] == 512


def test_minibatch_std_sees_variety():
    same = torch.ones(4, 2, 4, 4)
    varied = torch.randn(4, 2, 4, 4)
    assert minibatch_std(same)[:, -1].abs().max() < 1e-3
    assert minibatch_std(varied)[:, -1].min() > 0.1
    assert minibatch_std(torch.randn(6, 2, 4, 4)).shape == (6, 3, 4, 4)  # 6 does not divide by 4


def test_infonce_on_one_process_prefers_matching_pairs():
    torch.manual_seed(0)
    cams = torch.randn(8, 16)
    matched = losses.infonce_pose_loss(cams + 0.01 * torch.randn(8, 16), cams, 0.1)
    shuffled = losses.infonce_pose_loss(cams.roll(1, 0), cams, 0.1)
    assert matched < 0.1 < shuffled
    image_pose = torch.randn(8, 16, requires_grad=True)
    losses.infonce_pose_loss(image_pose, cams, 0.1).backward()  # no process group: must not crash
    assert image_pose.grad.abs().sum() > 0


def test_regularisers():
    anchors = torch.zeros(2, 16, 3)
    anchors[:, :, 0] = torch.linspace(-1, 1, 16)
    assert losses.center_loss(anchors) < 1e-12
    assert torch.isclose(losses.center_loss(anchors + 1), torch.tensor(1.0))  # |(1,1,1)|^2 / 3
    spacing = (2 / 15) ** 2
    assert torch.isclose(losses.knn_loss(anchors, 2), torch.tensor(spacing), rtol=0.3)
    assert losses.knn_loss(anchors * 2, 2) > 3.9 * losses.knn_loss(anchors, 2)


def test_r1_and_blur_and_schedules():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    logits = (x * 3).sum(dim=(1, 2, 3))
    assert torch.allclose(losses.r1_penalty(x, logits), torch.full((2,), 9.0 * 192))
    image = torch.zeros(1, 3, 16, 16)
    image[..., 8, 8] = 1
    blurred = losses.blur_images(image, 2.0)
    assert torch.isclose(blurred.sum(), image.sum(), rtol=1e-4) and blurred.max() < 0.1
    assert losses.blur_sigma_at(0, 10, 200, 256) == 10 and losses.blur_sigma_at(300, 10, 200, 256) == 0
    assert losses.blur_sigma_at(100, 10, 200, 128) == 2.5
    # half-life: after ema_kimg worth of images the old weights count half
    beta = losses.ema_beta(32, 10**9, 10, 0.05)
    assert abs(beta ** (10_000 / 32) - 0.5) < 1e-9
    assert losses.ema_beta(32, 320, 10, 0.05) < beta  # ramp-up: faster early on


def test_fast_conv_has_exact_first_and_second_derivatives():
    from gsgan_core.models.discriminator import conv2d_same

    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv2d_same, (x, w))
    assert torch.autograd.gradgradcheck(conv2d_same, (x, w))


def test_r1_weight_gradients_match_the_builtin_convolution(monkeypatch):
    import torch.nn.functional as F

    from gsgan_core.models import discriminator as dm

    def r1_grads():
        torch.manual_seed(0)
        D = Discriminator(16, "none", **SMALL).double()
        reals = torch.randn(4, 3, 16, 16, dtype=torch.float64, requires_grad=True)
        losses.r1_penalty(reals, D(reals).logits).mean().backward()
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in D.parameters()]

    fast = r1_grads()
    monkeypatch.setattr(dm, "conv2d_same", lambda x, w, b=None: F.conv2d(x, w, b, padding=w.shape[-1] // 2))
    builtin = r1_grads()
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(fast, builtin))
    assert any(a.abs().sum() > 0 for a in fast)


def test_fir_downsample_is_the_stylegan2_filter():
    import torch.nn.functional as F

    from gsgan_core.models.discriminator import blur_downsample

    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    kernel = (f[:, None] * f[None, :] / 64).view(1, 1, 4, 4)
    expected = F.conv2d(x.reshape(6, 1, 16, 16), kernel, stride=2, padding=1).view(2, 3, 8, 8)
    assert torch.allclose(blur_downsample(x), expected, atol=1e-12)
