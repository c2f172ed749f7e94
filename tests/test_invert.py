"""Inversion on the CPU: a tiny random generator inverting its own renderings (W, W+, PTI, the camera
search), the inversion file, progress and cancellation, the metrics, and `gsgan-invert` end to end with
its one-line errors. Everything runs at 32 px with a few steps: mechanics, not quality (the benchmark,
benchmarks/bench_invert.py, measures quality on the GPU)."""

import json
import threading

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import random_generator
from gsgan_core.cameras import cameras_to_labels, orbit_camera
from gsgan_core.cli import invert_main
from gsgan_core.errors import ConfigError
from gsgan_core.invert import (
    ImageError, InversionCancelled, InversionFileError, InvertSettings, Perceptual,
    PerceptualWeightsError, Target, fit_latents, invert, label_json, load_inversion, psnr, read_label,
    render_latents, ssim, target_from_array, w_avg_of,
)
from gsgan_core.io.checkpoint import save_checkpoint
from gsgan_core.io.ply import read_ply
from gsgan_core.view.video import count_frames

R = 32
YAW, PITCH = 0.4, 0.1


@pytest.fixture(scope="module")
def G():
    return random_generator("tiny", seed=3)


@pytest.fixture(scope="module")
def scene(G):
    """(RGBA float image [R, R, 4], its label [25], the true ws) of one latent of G."""
    z = torch.randn(1, G.config.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ws = G.mapping(z)
        cam2world, K = orbit_camera(torch.tensor([YAW]), torch.tensor([PITCH]))
        rgb, alpha = render_latents(G, ws, cam2world, K, R)
    image = torch.cat([rgb, alpha], 1)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    return image, cameras_to_labels(cam2world, K)[0], ws


def quick(**overrides) -> InvertSettings:
    values = dict(w_steps=10, wplus_steps=6, pti_steps=4, search_steps=3, search_yaws=6, search_pitches_deg=(0.0,),
                  search_keep=2, w_samples=256, preview_every=4)
    values.update(overrides)
    return InvertSettings(**values)


def test_loss_falls_and_the_latent_round_trips(G, scene, tmp_path):
    image, label, _ = scene
    events = []
    result = invert(G, image, label, quick(mode="w+"), resolution=R, progress=events.append)
    w_curve, wplus_curve = result.losses["w"], result.losses["w+"]
    assert w_curve[-1] < 0.8 * w_curve[0], w_curve
    assert all(p.grad is None for p in G.parameters()), "the latent stages leave G's gradients alone"
    assert wplus_curve[-1] <= w_curve[-1] * 1.05
    start_rgb, _ = render_latents(G, w_avg_of(G)[None, None].expand(1, G.config.num_ws, -1), *_cams(label), R)
    fitted, _ = render_latents(G, result.ws, *_cams(label), R)
    truth = torch.from_numpy(image[..., :3]).permute(2, 0, 1)[None]
    assert psnr(fitted.clamp(0, 1), truth) > psnr(start_rgb.clamp(0, 1), truth)
    # progress: one report per step, in order, with previews every few steps
    assert [e.stage for e in events] == ["w"] * 10 + ["w+"] * 6
    assert events[-1].fraction == 1.0 and events[0].preview.shape == (R, R, 3)
    assert sum(e.preview is not None for e in events) >= 4
    # the file
    path = result.save(tmp_path / "inv.safetensors")
    back = load_inversion(path)
    assert torch.equal(back.ws, result.ws) and torch.equal(back.w, result.w)
    assert torch.allclose(back.label, label)
    assert back.mode == "w+" and back.camera_source == "label" and back.generator_state is None
    assert back.pose == result.pose and back.target.shape == (R, R, 4)
    assert back.losses["w"][-1] == pytest.approx(w_curve[-1], abs=1e-6)
    assert back.generator(G) is G
    with pytest.raises(ConfigError, match="holds no generator weights"):
        back.generator(None)


def _cams(label):
    from gsgan_core.cameras import labels_to_cameras

    c, k = labels_to_cameras(label[None])
    return c, k


def test_pivotal_tuning_tunes_a_copy_and_saves_it(G, scene, tmp_path):
    image, label, _ = scene
    before = {k: v.clone() for k, v in G.state_dict().items()}
    result = invert(G, image, label, quick(mode="pti", w_steps=4, wplus_steps=2, pti_steps=4, lr_pti=1e-3,
                                                    pti_view_yaws_deg=(-60.0, 60.0)), resolution=R)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items()), "G itself is never modified"
    assert result.losses["pti"][-1] < result.losses["pti"][0]
    back = load_inversion(result.save(tmp_path / "pti.safetensors"))
    tuned = back.generator(G)
    rebuilt = back.generator()  # from the file alone
    with torch.no_grad():
        a, _ = render_latents(tuned, back.ws, *_cams(back.label), R)
        b, _ = render_latents(rebuilt, back.ws, *_cams(back.label), R)
        c, _ = render_latents(G, back.ws, *_cams(back.label), R)
    assert torch.allclose(a, b, atol=1e-5)
    assert (a - c).abs().max() > 1e-3


def test_camera_search_and_batches(G, scene):
    image, label, _ = scene
    target = Target.stack([target_from_array(image, R), target_from_array(image[:, ::-1], R)])
    events = []
    # search_batch 2 with 2 kept cameras: the short fits run one image at a time
    fit = fit_latents(G, target, None, quick(mode="w", w_steps=3, search_batch=2), progress=events.append)
    assert fit.ws.shape == (2, G.config.num_ws, G.config.w_dim) and fit.labels.shape == (2, 25)
    assert fit.yaw_deg.shape == (2,) and torch.isfinite(fit.yaw_deg).all()
    assert len(fit.losses["search"]) == 3 and len(fit.losses["w"]) == 3
    assert [e.stage for e in events] == ["search"] * 6 + ["w"] * 3 and events[-1].fraction == 1.0
    assert events[0].yaw_deg is not None
    assert not fit.losses.get("w+")
    with pytest.raises(ConfigError, match="2 camera labels for 1 images"):
        fit_latents(G, target.select(0), torch.stack([label, label]), quick())


def test_cancel_stops_the_fit(G, scene):
    image, label, _ = scene
    cancel = threading.Event()
    seen = []

    def progress(event):
        seen.append(event.step)
        if event.step == 2:
            cancel.set()

    with pytest.raises(InversionCancelled, match="stage w at step 3"):
        invert(G, image, label, quick(), resolution=R, progress=progress, cancel=cancel)
    assert seen == [1, 2]


def test_metrics_and_perceptual_weights(tmp_path):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    y = (x + 0.1).clamp(0, 1)
    assert (ssim(x, y) < 1).all() and (ssim(x, torch.rand_like(x)) < 0.2).all()
    noisy = x + 0.01 * torch.randn_like(x)
    assert psnr(noisy, x).mean() == pytest.approx(40, abs=0.5)
    from safetensors.torch import save_file

    net = Perceptual()
    path = tmp_path / "vgg16.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in net.features.state_dict().items()}, str(path))
    loaded = Perceptual.load(path)
    assert float(loaded(x, x).max()) < 1e-6 and (loaded(x, y) > 0).all()
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(PerceptualWeightsError, match="bad.safetensors: is not torchvision's VGG16"):
        Perceptual.load(tmp_path / "bad.safetensors")


def test_targets_and_labels(tmp_path, scene):
    image, label, _ = scene
    rgba = (np.asarray(image) * 255).round().astype(np.uint8)
    rgba[..., 3] = 255  # an opaque RGBA image is an RGB one: no mask
    assert target_from_array(rgba, 16).alpha is None and target_from_array(rgba, 16).rgb.shape == (1, 3, 16, 16)
    rgba[:8, :, 3] = 0
    masked = target_from_array(rgba, 64)
    assert masked.alpha.shape == (1, 1, 64, 64) and float(masked.alpha[0, 0, 0, 0]) == 0
    with pytest.raises(ImageError, match="fully transparent"):
        target_from_array(np.zeros((8, 8, 4), np.uint8), 8)
    # the three label shapes
    values = [float(v) for v in label]
    for i, data in enumerate([values, {"label": values}, {"labels": [["a.png", values], ["b/head.png", values]]}]):
        path = tmp_path / f"label{i}.json"
        path.write_text(json.dumps(data))
        assert torch.allclose(read_label(path, image_name="x/head.png"), label)
    (tmp_path / "one.json").write_text(label_json(label, "head.png"))
    assert torch.allclose(read_label(tmp_path / "one.json", image_name="other.png"), label, atol=1e-6)


def test_inversion_file_errors(tmp_path, G):
    with pytest.raises(InversionFileError, match="file not found"):
        load_inversion(tmp_path / "none.safetensors")
    save_checkpoint(tmp_path / "g.safetensors", G)
    with pytest.raises(InversionFileError, match="not a gsgan inversion"):
        load_inversion(tmp_path / "g.safetensors")


# ====================================================================== the command
@pytest.fixture(scope="module")
def files(tmp_path_factory, G, scene):
    root = tmp_path_factory.mktemp("invert")
    checkpoint = root / "tiny.safetensors"
    save_checkpoint(checkpoint, G, dataset={"name": "test", "resolution": R})
    image, label, _ = scene
    png = root / "head.png"
    iio.imwrite(png, (image * 255 + 0.5).astype(np.uint8))
    (root / "label.json").write_text(label_json(label, "head.png"))
    return {"ckpt": str(checkpoint), "png": str(png), "label": str(root / "label.json"), "root": root}


def test_command_writes_every_output(files, tmp_path, capsys):
    out = tmp_path / "out"
    status = invert_main([files["ckpt"], files["png"], "--camera", files["label"], "--mode", "pti", "--steps", "2",
                          "--frames", "3", "--quiet", "--device", "cpu", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "fitted view PSNR" in printed and "perceptual loss off" in printed
    result = load_inversion(out / "inversion.safetensors")
    assert result.mode == "pti" and result.generator_state is not None
    assert iio.imread(out / "fit.png").shape == (R, R, 3)
    assert iio.imread(out / "compare.png").shape == (R, 2 * R, 3)
    assert count_frames(out / "turntable.mp4") == 3
    assert read_ply(out / "head.ply").num_gaussians == random_generator("tiny").config.num_gaussians
    assert torch.allclose(read_label(out / "camera.json", "head.png"), result.label, atol=1e-6)
    # the estimated camera, written as camera.json, is a label the command takes back
    auto = tmp_path / "auto"
    assert invert_main([files["ckpt"], files["png"], "--mode", "w", "--steps", "1", "--search-steps", "1",
                        "--frames", "1", "--video", "turn.gif", "--quiet", "--device", "cpu", "--out", str(auto)]) == 0
    assert "estimated yaw" in capsys.readouterr().out
    assert load_inversion(auto / "inversion.safetensors").camera_source == "auto"
    assert read_label(auto / "camera.json").shape == (25,) and count_frames(auto / "turn.gif") == 1


def _write(root, name, content):
    path = root / name
    if isinstance(content, np.ndarray):
        iio.imwrite(path, content)
    else:
        path.write_text(content)
    return str(path)


FLAG_CASES = {"zero steps": ["--steps", "0"], "nan fps": ["--fps", "nan"], "zero fps": ["--fps", "0"],
              "negative search steps": ["--search-steps", "-1"], "zero frames": ["--frames", "0"],
              "negative seed": ["--seed", "-1"]}


@pytest.mark.parametrize("case, message", [
    ("missing image", "nope.png: file not found"),
    ("text as image", "notes.png: cannot be read as an image"),
    ("not square", "wide.png: is 40x32 pixels; inversion needs a square image"),
    ("24 numbers", "short.json: the label has 24 numbers"),
    ("not json", "broken.json: is not valid JSON"),
    ("pixel intrinsics", "pixels.json: principal point"),
    ("no entry", "dataset.json: has no label for head.png"),
    ("missing checkpoint", "gone.safetensors: file not found"),
    ("zero steps", "--steps must be at least 1"),
    ("nan fps", "--fps must be a finite number, got nan"),
    ("zero fps", "--fps must be in (0, 1000], got 0.0"),
    ("negative search steps", "--search-steps must be at least 0, got -1"),
    ("zero frames", "--frames must be at least 1, got 0"),
    ("negative seed", "--seed must be in [0, 4294967295], got -1"),
    ("out is a file", "taken: is a file; --out names a folder"),
])
def test_bad_inputs_give_one_line_errors(case, message, files, tmp_path, capsys):
    root = tmp_path
    label = json.loads((files["root"] / "label.json").read_text())["labels"][0][1]
    args = {"ckpt": files["ckpt"], "image": files["png"], "camera": files["label"], "out": str(root / "out"),
            "extra": []}
    if case == "missing image":
        args["image"] = str(root / "nope.png")
    elif case == "text as image":
        args["image"] = _write(root, "notes.png", "hello")
    elif case == "not square":
        args["image"] = _write(root, "wide.png", np.zeros((32, 40, 3), np.uint8))
    elif case == "24 numbers":
        args["camera"] = _write(root, "short.json", json.dumps(label[:24]))
    elif case == "not json":
        args["camera"] = _write(root, "broken.json", "[1, 2,")
    elif case == "pixel intrinsics":
        bad = list(label)
        bad[18] = bad[21] = 16.0
        args["camera"] = _write(root, "pixels.json", json.dumps({"label": bad}))
    elif case == "no entry":
        args["camera"] = _write(root, "dataset.json", json.dumps({"labels": [["a.png", label], ["b.png", label]]}))
    elif case == "missing checkpoint":
        args["ckpt"] = str(root / "gone.safetensors")
    elif case in FLAG_CASES:
        args["extra"] = FLAG_CASES[case]
    elif case == "out is a file":
        args["out"] = _write(root, "taken", "x")
    status = invert_main([args["ckpt"], args["image"], "--camera", args["camera"], "--out", args["out"], "--quiet",
                          "--device", "cpu", *args["extra"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and err[0].startswith("gsgan-invert: error: ") and message in err[0], err
    if case != "out is a file":
        assert not (root / "out").exists(), "every input is checked before the output folder is made"


def test_benchmark_runs_small_on_the_cpu(tmp_path):
    """benchmarks/bench_invert.py end to end, sized for the CPU: a tiny checkpoint, two heads at 32 px, a
    few steps of every method with the camera given and estimated; every figure it reports is there."""
    import math
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_invert.py"
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, random_generator("tiny", background=False), dataset={"name": "unit", "resolution": 64})
    out = tmp_path / "bench"
    done = subprocess.run([sys.executable, str(script), "--checkpoint", str(checkpoint), "--device", "cpu",
                           "--heads", "2", "--resolution", "32", "--steps", "2", "--pti-steps", "1",
                           "--search-steps", "1", "--workers", "1", "--figure-heads", "1",
                           "--set", "search_yaws=6", "--set", "search_latents=1", "--set", "search_keep=2",
                           "--set", "w_samples=200", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    results = data["results"]
    assert data["meta"]["heads"] == 2 and data["meta"]["resolution"] == 32
    methods, cameras = ("average", "W", "W+", "PTI"), ("given", "estimated")
    for method in methods:
        for camera in cameras:
            row = results[method][camera]
            for key in ("input_psnr", "novel_psnr", "input_ssim", "novel_ssim"):
                assert math.isfinite(row[key]), (method, camera, key, row)
    errors = results["W+"]["estimated"]["camera_error_deg"]
    assert len(errors["per_head_yaw"]) == 2 and results["W+"]["given"]["camera_error_deg"] is None
    table = (out / "results.md").read_text()
    assert all(name in table for name in ("average", "W+", "PTI"))
    figure = iio.imread(out / "figure.png")
    assert figure.ndim == 3 and figure.shape[0] >= 32 * (1 + len(methods))
    assert (out / "latents.safetensors").exists()
