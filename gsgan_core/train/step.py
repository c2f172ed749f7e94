"""One training step: `train_step(run, batch) -> losses`.

    inputs    this step's random draws, from (seed, rank, step): latents, cameras, backgrounds
    G phase   z, cameras -> Gaussians -> images -> D -> G loss (+ pose, centre, kNN) -> Adam step
    D phase   fakes (no G grad) and reals -> D -> logistic loss (+ pose on reals, lazy R1) -> Adam step
    G_ema     exponential moving average of G

Gradients are averaged over processes before each optimiser step, and a non-finite loss or
gradient stops training before it reaches the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gsgan_core.data.dataset import composite
from gsgan_core.errors import TrainingError
from gsgan_core.models.sampling import generate_images, random_labels
from gsgan_core.train import losses
from gsgan_core.train.data import background_colors, step_generator
from gsgan_core.train.distributed import average_gradients
from gsgan_core.train.run import Run

# What train_step returns, in the order the log writes it.
LOSS_NAMES = ("loss/G", "loss/G_adv", "loss/G_pose", "loss/center", "loss/knn", "loss/D", "loss/D_adv",
              "loss/D_pose", "loss/r1", "D/real", "D/fake", "grad_norm/G", "grad_norm/D")


@dataclass
class StepInputs:
    reals: Tensor  # [b, 3, R, R] in [-1, 1], composited on this step's backgrounds
    real_labels: Tensor  # [b, 25]
    z: Tensor  # [b, z_dim]
    mapping_labels: Tensor | None  # [b, 25] the camera the mapping sees (pose-conditioned G only)
    render_labels: Tensor  # [b, V, 25] the cameras each fake is rendered from
    fake_backgrounds: Tensor  # [b, V, 3]
    blur_sigma: float  # D's input blur, in pixels
    r1: bool  # a lazy-R1 step


def step_inputs(run: Run, batch: tuple[Tensor, Tensor]) -> StepInputs:
    config, device, b, p = run.config, run.device, run.batch_per_process, run.progress
    rng = step_generator(config.seed, run.world.rank, p.step)
    kimg = p.nimg / 1000
    real_uint8, real_labels = batch  # [b, 4, R0, R0] uint8, [b, 25]
    reals = composite(real_uint8.to(device), background_colors(config.background, b, rng).to(device))
    if reals.shape[-1] != run.resolution:
        reals = F.interpolate(reals, size=(run.resolution, run.resolution), mode="area")
    z = torch.randn(b, run.g_config.z_dim, generator=rng).to(device)
    fake_labels = random_labels(run.labels, b, rng)  # [b, 25]
    # multi-view: view v of scene i is camera i + v of the batch (cameras rolled)
    render_labels = torch.stack([fake_labels.roll(v, dims=0) for v in range(config.views)], dim=1)
    mapping_labels = None
    if run.g_config.c_dim:  # GSGAN: the mapping sees the camera, sometimes another one
        fade = min(kimg / config.c_swap_fade_kimg, 1.0) if config.c_swap_fade_kimg > 0 else 1.0
        swap_prob = (1 - fade) * 1.0 + fade * config.c_swap_prob  # early on: mostly random cameras
        swap = (torch.rand(b, generator=rng) < swap_prob).to(device)
        mapping_labels = torch.where(swap[:, None], random_labels(run.labels, b, rng), fake_labels)
    fake_bg = background_colors(config.background, b * config.views, rng).view(b, config.views, 3).to(device)
    return StepInputs(
        reals=reals, real_labels=real_labels.to(device), z=z, mapping_labels=mapping_labels,
        render_labels=render_labels, fake_backgrounds=fake_bg,
        blur_sigma=losses.blur_sigma_at(kimg, config.blur_sigma, config.blur_fade_kimg, run.resolution),
        r1=config.r1_interval > 0 and config.r1_gamma > 0 and p.step % config.r1_interval == 0,
    )


def _fakes(run: Run, x: StepInputs, update_w_avg: bool = False) -> tuple[Tensor, Tensor]:
    return generate_images(run.G, x.z, mapping_labels=x.mapping_labels, render_labels=x.render_labels,
                           backgrounds=x.fake_backgrounds, resolution=run.resolution, backend=run.config.render_backend,
                           update_w_avg=update_w_avg, supersample=run.config.render_supersample)


def generator_phase(run: Run, x: StepInputs) -> dict[str, Tensor]:
    config = run.config
    zero = torch.zeros((), device=run.device)
    if run.g_still():  # a new D learns before it steers G
        return dict.fromkeys(("loss/G", "loss/G_adv", "loss/G_pose", "loss/center", "loss/knn", "grad_norm/G"), zero)
    run.G.requires_grad_(True)
    run.D.requires_grad_(False)
    images, anchor_means = _fakes(run, x, update_w_avg=True)
    d_fake = run.D(losses.blur_images(images, x.blur_sigma), x.render_labels.flatten(0, 1))
    adv = losses.g_nonsaturating(d_fake.logits)
    pose = zero
    if run.d_config.pose == "contrastive" and config.pose_weight > 0:
        pose = losses.infonce_pose_loss(d_fake.image_pose, d_fake.camera_pose, config.pose_temperature)
    center, knn = losses.center_loss(anchor_means), losses.knn_loss(anchor_means, config.knn_k)
    total = adv + config.pose_weight * pose + config.lambda_center * center + config.lambda_knn * knn
    norm = apply_gradients(run, "G", total)
    return {"loss/G": total, "loss/G_adv": adv, "loss/G_pose": pose, "loss/center": center, "loss/knn": knn,
            "grad_norm/G": norm}


def discriminator_phase(run: Run, x: StepInputs) -> dict[str, Tensor]:
    config = run.config
    run.G.requires_grad_(False)
    run.D.requires_grad_(True)
    with torch.no_grad():
        images, _ = _fakes(run, x)
    d_fake = run.D(losses.blur_images(images, x.blur_sigma), x.render_labels.flatten(0, 1))
    real_input = x.reals.detach().requires_grad_(x.r1)
    d_real = run.D(losses.blur_images(real_input, x.blur_sigma), x.real_labels)
    adv = losses.d_logistic(d_real.logits, d_fake.logits)
    pose = r1 = torch.zeros((), device=run.device)
    if run.d_config.pose == "contrastive" and config.pose_weight > 0:  # pose term on reals only
        pose = losses.infonce_pose_loss(d_real.image_pose, d_real.camera_pose, config.pose_temperature)
    if x.r1:  # lazy: every r1_interval steps, scaled by the interval
        r1 = losses.r1_penalty(real_input, d_real.logits).mean() * (config.r1_gamma / 2)
    total = adv + config.pose_weight * pose + r1 * config.r1_interval
    norm = apply_gradients(run, "D", total)
    return {"loss/D": total, "loss/D_adv": adv, "loss/D_pose": pose, "loss/r1": r1,
            "D/real": d_real.logits.mean(), "D/fake": d_fake.logits.mean(), "grad_norm/D": norm}


def apply_gradients(run: Run, name: str, loss: Tensor) -> Tensor:
    """Backward, average over processes, stop on a non-finite value, clip, step; the gradient norm
    (before clipping). The check comes before the step: a NaN never reaches the weights."""
    network, optimizer = (run.G, run.opt_G) if name == "G" else (run.D, run.opt_D)
    clip = run.config.g_clip if name == "G" else run.config.d_clip
    params = list(network.parameters())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    flat = average_gradients(params, run.world)
    if not bool(torch.isfinite(loss)) or not bool(torch.isfinite(flat).all()):
        p = run.progress
        fallback = run.kept or ("no snapshot was written yet, so there is nothing to resume: start the run "
                                "again (lower --g-lr/--d-lr, or another --seed)")
        raise TrainingError(f"non-finite {name} loss or gradient at step {p.step} (kimg {p.nimg / 1000:.3f}): "
                            f"loss {float(loss.detach()):.4g}; {fallback}")
    norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 else flat.norm()
    optimizer.step()
    return norm


def update_ema(run: Run, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G; buffers are copied."""
    with torch.no_grad():
        for p_ema, p in zip(run.G_ema.parameters(), run.G.parameters()):
            p_ema.lerp_(p, 1 - beta)
        for b_ema, b in zip(run.G_ema.buffers(), run.G.buffers()):
            b_ema.copy_(b)


def train_step(run: Run, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor | float]:
    """One step on this process's share of the batch; the progress moves on by the whole batch.

    Returns this process's losses (0-d tensors, LOSS_NAMES) and the step's schedule values
    ("blur_sigma", "ema_beta": floats)."""
    x = step_inputs(run, batch)
    g_still = run.g_still()
    out = {**generator_phase(run, x), **discriminator_phase(run, x)}
    run.progress.nimg += run.config.batch
    run.progress.step += 1
    beta = losses.ema_beta(run.config.batch, run.progress.nimg, run.config.ema_kimg, run.config.ema_rampup)
    if not g_still:  # while G stays still, so does its average
        update_ema(run, beta)
    return {**{name: out[name] for name in LOSS_NAMES}, "blur_sigma": x.blur_sigma, "ema_beta": beta}
