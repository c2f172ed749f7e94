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


def textured_images(n, seed, frequency, noise=0.1):  # stripes plus fine noise: every pyramid band has content
    g = torch.Generator().manual_seed(seed + 100)
    return (0.8 * smooth_images(n, seed, frequency) + noise * torch.randn(n, 3, 32, 32, generator=g)).clamp(-1, 1)


def _progan_pyramid_by_loops(image, levels):  # [H, W] -> finest first: the original's pyramid, written out
    f = [1.0, 4.0, 6.0, 4.0, 1.0]
    kernel = [[a * b / 256 for b in f] for a in f]

    def convolve(x, gain):  # scipy.ndimage.convolve(mode="mirror"): index -1 reads 1, index n reads n - 2
        n = len(x)
        mirror = lambda i: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)  # noqa: E731
        return [[gain * sum(kernel[u][v] * x[mirror(r + u - 2)][mirror(c + v - 2)] for u in range(5) for v in range(5))
                 for c in range(n)] for r in range(n)]

    pyramid, current = [], image
    for _ in range(levels - 1):
        low = [row[::2] for row in convolve(current, 1.0)[::2]]
        zeros = [[0.0] * len(current) for _ in current]
        for r, row in enumerate(low):
            for c, v in enumerate(row):
                zeros[2 * r][2 * c] = v
        up = convolve(zeros, 4.0)
        pyramid.append([[a - b for a, b in zip(ra, rb)] for ra, rb in zip(current, up)])
        current = low
    return pyramid + [current]


def test_pyramid_is_the_originals_and_swd_ranks_distributions():
    images = torch.randn(2, 3, 8, 8)
    pyramid = laplacian_pyramid(images, 3)
    assert [p.shape[-1] for p in pyramid] == [8, 4, 2]
    expected = _progan_pyramid_by_loops(images[1, 2].tolist(), 3)
    for level, reference in zip(pyramid, expected):
        assert torch.allclose(level[1, 2], torch.tensor(reference), atol=1e-5)
    a, b = textured_images(16, 0, 2), textured_images(16, 1, 2)
    same = sliced_wasserstein(a, b)["mean"]
    different = sliced_wasserstein(a, textured_images(16, 1, 6))["mean"]  # other stripes
    assert 0 <= same < different / 2
    assert sliced_wasserstein(a, b, seed=3)["mean"] != same  # random patches and projections depend on the seed
    with pytest.raises(ValueError):
        sliced_wasserstein(a, a[:8])
    with pytest.raises(ValueError):
        sliced_wasserstein(a, b, normalise="none")


def test_swd_per_set_normalisation_ignores_contrast_and_joint_does_not():
    a, b = textured_images(16, 0, 2), textured_images(16, 1, 2)
    faint = 0.3 * b  # the same images at 30 % contrast
    same, per_set = sliced_wasserstein(a, b)["mean"], sliced_wasserstein(a, faint)["mean"]
    assert per_set == pytest.approx(same, rel=0.1)  # the original's per-set statistics rescale each set
    joint_same, joint = (sliced_wasserstein(a, x, normalise="joint")["mean"] for x in (b, faint))
    assert joint_same == pytest.approx(same, rel=0.2) and joint > 5 * joint_same  # one scale for both: it counts
    # noise at 5x the amplitude: the joint variant sees it in every band, the original mostly in the coarse one
    noisy = [sliced_wasserstein(a, textured_images(16, 1, 2, noise=0.5), normalise=n)["levels"]
             for n in ("per-set", "joint")]
    assert noisy[1][0] > 5 * noisy[0][0] and noisy[0][0] < 2 * sliced_wasserstein(a, b)["levels"][0]


@pytest.mark.gpu
def test_swd_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: torch.cuda.is_available() is False on this machine")
    a, b = textured_images(16, 0, 2), textured_images(16, 1, 3)  # every band has content to normalise
    cpu = sliced_wasserstein(a, b, seed=1)
    gpu = sliced_wasserstein(a, b, seed=1, device="cuda")  # same patches and projections (CPU generator)
    assert gpu["levels"] == pytest.approx(cpu["levels"], rel=1e-3)


def test_fid_without_weights_says_so(tmp_path):
    with pytest.raises(FIDUnavailable) as caught:
        inception_model(tmp_path / "pt_inception.pth", "cpu")
    assert "--fid-weights" in str(caught.value) or "pytorch-fid" in str(caught.value)


def test_metrics_command_swd_with_floor_and_fid_message(tmp_path, capsys, monkeypatch):
    data = tmp_path / "heads.zip"
    make_heads_dataset(data, 8, 16, seed=0, processes=1, progress=False)
    torch.manual_seed(0)
    ckpt = tmp_path / "g.safetensors"
    save_checkpoint(ckpt, Generator(preset("tiny", image_resolution=16)),
                    dataset={"name": "heads", "resolution": 16})
    import gsgan_core.io.open as open_module

    def chatty_load(*args, **kwargs):  # like gsplat, whose first use prints its build message on stdout
        print("gsplat: CUDA extension has been set up successfully")
        return load(*args, **kwargs)

    load = open_module.load_generator
    monkeypatch.setattr(open_module, "load_generator", chatty_load)
    assert metrics_main(["--network", str(ckpt), "--data", str(data), "--num", "4", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # only the JSON object: what the work printed went to stderr
    assert "set up successfully" in captured.err
    assert result["num"] == 4 and result["swd"] > result["swd_real_floor"] > 0
    assert len(result["swd_real_floor_levels"]) == len(result["swd_levels"]) == len(result["swd_resolutions"])
    assert result["swd_real_floor"] == pytest.approx(sum(result["swd_real_floor_levels"]) / len(result["swd_levels"]))
    assert result["render_supersample"] == 1 and result["swd_normalise"] == "per-set" and "swd_joint" not in result
    assert metrics_main(["--network", str(ckpt), "--data", str(data), "--num", "4", "--json",
                         "--swd-normalise", "both"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["swd"] == result["swd"] and both["swd_real_floor"] == result["swd_real_floor"]
    assert both["swd_joint"] != both["swd"] and len(both["swd_joint_real_floor_levels"]) == len(both["swd_levels"])
    # A generator trained on supersampled fakes (the checkpoint says so) is measured on them too.
    torch.manual_seed(0)
    boxed = tmp_path / "g-ss2.safetensors"
    save_checkpoint(boxed, Generator(preset("tiny", image_resolution=16)), training={"render_supersample": 2},
                    dataset={"name": "heads", "resolution": 16})
    assert metrics_main(["--network", str(boxed), "--data", str(data), "--num", "4", "--json"]) == 0
    result_ss = json.loads(capsys.readouterr().out)
    assert result_ss["render_supersample"] == 2 and result_ss["swd_real_floor"] == result["swd_real_floor"]
    assert result_ss["swd"] != result["swd"]  # same weights and seeds, other images
    assert metrics_main(["--network", str(ckpt), "--data", str(data), "--num", "4", "--metrics", "levels",
                         "--json"]) == 0
    levels_only = json.loads(capsys.readouterr().out)
    assert "swd" not in levels_only  # only what was asked for
    assert len(levels_only["level_contributions"]) == preset("tiny").num_levels
    assert levels_only["level_contributions"][0] > 0
    assert metrics_main(["--network", str(ckpt), "--data", str(data), "--metrics", "swd,fid"]) == 1
    assert "--fid-weights" in capsys.readouterr().err


# ----------------------------------------------------------------------------- per-level contribution
def _two_level_scene(child_opacity_logit: float):
    """A big red Gaussian (level 0) with four small blue children (level 1) in front of it."""
    from gsgan_core.gaussians import Gaussians

    means = torch.tensor([[0.0, 0.0, 0.0], [-0.08, -0.08, 0.3], [0.08, -0.08, 0.3], [-0.08, 0.08, 0.3],
                          [0.08, 0.08, 0.3]])
    log_scales = torch.tensor([[-1.6] * 3] + [[-3.5] * 3] * 4)
    quats = torch.tensor([[1.0, 0, 0, 0]]).expand(5, 4)
    opacity_logits = torch.tensor([6.0] + [child_opacity_logit] * 4)
    red, blue = [1.5, -1.7, -1.7], [-1.7, -1.7, 1.5]  # degree-0 SH: RGB = 0.2821 * c + 0.5
    sh_dc = torch.tensor([red] + [blue] * 4)
    return Gaussians(means[None], log_scales[None], quats[None], opacity_logits[None], sh_dc[None],
                     level=torch.tensor([0, 1, 1, 1, 1]), parent=torch.tensor([-1, 0, 0, 0, 0]))


def test_level_contributions_tell_a_dead_level_from_a_live_one():
    from gsgan_core.cameras import orbit_camera, to_rasterizer
    from gsgan_core.metrics.levels import level_contributions

    cam2world, K_norm = orbit_camera(0.0, 0.0, 2.7, (0.0, 0.0, 0.0), 18.0)
    viewmats, Ks = to_rasterizer(cam2world[None, None], K_norm[None, None], 48, 48)  # camera at z = +2.7
    live = level_contributions(_two_level_scene(6.0), viewmats, Ks, 48, 48, backend="reference")
    dead = level_contributions(_two_level_scene(-12.0), viewmats, Ks, 48, 48, backend="reference")
    assert sorted(live) == sorted(dead) == [0, 1]
    assert live[0] > 0.2 and dead[0] > 0.2  # without level 0 the head's pixels turn white or blue
    assert live[1] > 0.05  # the blue children cover part of the red blob
    assert dead[1] < 1e-4  # transparent children change nothing


def test_metrics_and_the_shared_sampling_helpers_do_not_import_training():
    import subprocess
    import sys

    code = ("import sys, gsgan_core.metrics.command, gsgan_core.metrics.levels, gsgan_core.models.sampling\n"
            "print(sorted(m for m in sys.modules if m.startswith('gsgan_core.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fake_and_real_images_match_generate_images_and_the_dataset(tmp_path):
    from gsgan_core.data.dataset import ImageDataset, composite, real_images
    from gsgan_core.models.sampling import fake_images, generate_images, z_from_seeds

    data = tmp_path / "heads.zip"
    make_heads_dataset(data, 4, 16, seed=0, processes=1, progress=False)
    dataset = ImageDataset(data)
    reals = real_images(dataset, [2, 0], 8)  # area-resized
    assert reals.shape == (2, 3, 8, 8)
    full = composite(torch.stack([dataset[2][0], dataset[0][0]]), torch.ones(2, 3))
    assert torch.allclose(reals, torch.nn.functional.avg_pool2d(full, 2), atol=1e-6)
    torch.manual_seed(0)
    G = Generator(preset("tiny", image_resolution=16, c_dim=25)).eval()
    labels = dataset.labels[:3]
    fakes = fake_images(G, labels, 16, seed=5, batch=2, backend="reference")  # two batches
    with torch.no_grad():
        direct, _ = generate_images(G, z_from_seeds([5, 6, 7], G.config.z_dim), mapping_labels=labels,
                                    render_labels=labels[:, None], backgrounds=torch.ones(3, 1, 3), resolution=16,
                                    backend="reference")
    assert fakes.shape == (3, 3, 16, 16) and torch.allclose(fakes, direct, atol=1e-5)


# ----------------------------------------------------------------------------- flags, notes and warnings
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metrics")
    data = folder / "heads.zip"
    make_heads_dataset(data, 8, 16, seed=0, processes=1, progress=False)
    torch.manual_seed(0)
    ckpt = folder / "g.safetensors"
    save_checkpoint(ckpt, Generator(preset("tiny", image_resolution=16)), dataset={"name": "heads", "resolution": 16})
    other = folder / "g32.safetensors"
    save_checkpoint(other, Generator(preset("tiny", image_resolution=32)), dataset={"name": "heads", "resolution": 32})
    return str(ckpt), str(data), str(other)


@pytest.mark.parametrize("flags, message, status", [
    (["--num", "0"], "--num must be at least 1, got 0", 1),
    (["--num", "-5"], "--num must be at least 1, got -5", 1),
    (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1", 1),
    (["--metrics", ","], "--metrics names no metric; known: swd, fid, levels", 1),
    (["--metrics", "swd,kid"], "--metrics: unknown metric(s) ['kid']; known: swd, fid, levels", 2),
    (["--device", "tpu9"], "--device 'tpu9': expected cuda, cpu or auto", 1),
])
def test_bad_flags_give_one_line_before_any_work(small_run, flags, message, status, capsys):
    ckpt, data, _ = small_run
    assert metrics_main(["--network", ckpt, "--data", data, *flags]) == status
    err = capsys.readouterr().err
    assert err == f"gsgan-metrics: error: {message}\n"


def test_a_reduced_num_says_why_and_progress_and_warnings_are_shown(small_run, capsys):
    ckpt, data, other = small_run
    assert metrics_main(["--network", ckpt, "--data", data, "--num", "64", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["num"] == 4
    assert f"--num 64 reduced to 4 for {data}: it has 8 images, and the real-vs-real floor needs two disjoint sets" \
        in captured.err
    for bar in ("real images (set A)", "generated images", "SWD"):  # the slow parts show progress
        assert bar in captured.err
    assert "4/4" in captured.err
    too_few = [w for w in result["warnings"] if "too few for SWD" in w]
    assert len(too_few) == 1 and f"warning: {too_few[0]}" in captured.err
    assert not any("px" in w for w in result["warnings"])
    # a checkpoint made for 32 px measured on a 16 px dataset: said, and the reals are resized
    assert metrics_main(["--network", other, "--data", data, "--num", "4", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    mismatch = [w for w in result["warnings"] if "trained at 32 px" in w and "is 16 px" in w]
    assert len(mismatch) == 1 and mismatch[0] in captured.err and result["resolution"] == 32


def test_an_swd_below_its_real_floor_is_flagged(small_run, capsys, monkeypatch):
    import gsgan_core.metrics.swd as swd_module

    ckpt, data, _ = small_run
    real = swd_module.sliced_wasserstein
    calls = []

    def fake_swd(a, b, **kwargs):  # the generator's SWD first, then the floor: make the first the lower
        calls.append(1)
        out = real(a, b, **kwargs)
        return {**out, "mean": out["mean"] * (0.01 if len(calls) % 2 else 100)}

    monkeypatch.setattr(swd_module, "sliced_wasserstein", fake_swd)
    assert metrics_main(["--network", ckpt, "--data", data, "--num", "4"]) == 0
    assert "is at or below its own real-vs-real floor" in capsys.readouterr().err
