"""GAN inversion: from one image (and its camera, or an estimate of it) to a latent of a generator,
optionally with the generator tuned to it (pivotal tuning), and from there to any view, a video or a PLY.

    invert(G, image, camera="auto"|label, settings)       one image -> InversionResult (the API)
    fit_latents(G, target_batch, labels|None, settings)   search + W + W+ for a batch (the benchmark)
    tune_generator(G, target, ws, label, settings)        pivotal tuning of a copy of G
    InversionResult.save(path) / load_inversion(path)     one .safetensors with metadata
    load_image / target_from_array / read_label           inputs, with errors that name the file

A GUI runs `invert` in a worker thread with `progress=` (InversionProgress: stage, step, loss, a preview
image every few steps) and `cancel=` (a threading.Event); the generator handed in is never modified.
`gsgan-invert` (command.py) is the command line; benchmarks/bench_invert.py measures it on procedural
heads whose 3D truth is known.
"""

from .fit import (
    MODES, InversionCancelled, InversionProgress, InvertSettings, LatentFit, fit_latents, latent_gaussians,
    pose_from_label, render_latents, tune_generator, w_avg_of, w_statistics,
)
from .inversion import InversionFileError, InversionResult, average_latent, invert, load_inversion
from .losses import Perceptual, PerceptualWeightsError, image_loss, psnr, ssim
from .target import ImageError, LabelError, Target, check_label, label_json, load_image, read_label, target_from_array

__all__ = [
    "MODES", "ImageError", "InversionCancelled", "InversionFileError", "InversionProgress", "InversionResult",
    "InvertSettings", "LabelError", "LatentFit", "Perceptual", "PerceptualWeightsError", "Target", "average_latent",
    "check_label", "fit_latents", "image_loss", "invert", "label_json", "latent_gaussians", "load_image",
    "load_inversion", "pose_from_label", "psnr", "read_label", "render_latents", "ssim", "target_from_array",
    "tune_generator", "w_avg_of", "w_statistics",
]
