"""The viewer's headless engine (gsgan_core.view) on CPU with a tiny random checkpoint (no window needed)."""

import dataclasses
import math
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import random_generator
from gsgan_core.cameras import OrbitPose
from gsgan_core.errors import CheckpointError, ConfigError, OutputError, PathError
from gsgan_core.io.checkpoint import save_checkpoint
from gsgan_core.models.generator import z_from_seeds
from gsgan_core.view.edits import keep_levels
from gsgan_core.view.engine import Engine
from gsgan_core.view.recording import Cancelled, record, trajectory
from gsgan_core.view.state import ExplorerState, LatentState, RenderSettings, ping_pong
from gsgan_core.view.video import FrameWriter, count_frames
from gsgan_core.view.viewer_camera import camera_from_orbit_pose, eye_position, orbit, pan, viewer_cameras, zoom

SIZE = 48


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, random_generator("tiny"), training={"kimg": 3.5}, dataset={"name": "unit", "resolution": 64})
    return path


@pytest.fixture()
def engine(checkpoint):
    engine = Engine("cpu", direction_samples=256)
    engine.load(checkpoint)
    return engine


def fresh_state(engine: Engine) -> ExplorerState:
    return ExplorerState(camera=engine.default_camera(), render=RenderSettings(resolution=SIZE, background=(0, 0, 0)))


def edit(state: ExplorerState, part: str, **changes) -> None:
    """Replaces one frozen part of `state` with a copy that has `changes`, as a panel does."""
    setattr(state, part, replace(getattr(state, part), **changes))


class CountingSynthesize:
    """Wraps generator.synthesize to count the real generator runs."""

    def __init__(self, generator):
        self.calls, self.inner = 0, generator.synthesize
        generator.synthesize = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def test_seed_changes_the_image(engine):
    state = fresh_state(engine)
    a = engine.frame(state).image
    edit(state, "latent", seed_a=7)
    b = engine.frame(state).image
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).mean() > 0.5


def test_camera_move_reuses_cached_gaussians(engine):
    counter = CountingSynthesize(engine.generator)
    state = fresh_state(engine)
    first = engine.frame(state).image
    assert counter.calls == 1
    for yaw in (0.3, 0.6, -0.4):
        edit(state, "camera", yaw=yaw)
        moved = engine.frame(state).image
    edit(state, "camera", radius=state.camera.radius * 1.2)
    edit(state, "render", mode="depth")
    engine.frame(state)
    assert counter.calls == 1, "a camera or render-mode change must not rerun the generator"
    assert engine.stats.render_calls == 5
    assert np.abs(first.astype(int) - moved).mean() > 0.5
    edit(state, "latent", psi=0.5)
    engine.frame(state)
    assert counter.calls == 2
    # Same state again: not even the rasterizer runs.
    renders = engine.stats.render_calls
    engine.frame(state)
    assert engine.stats.render_calls == renders


def test_level_filter_counts_follow_the_hierarchy(engine):
    config = engine.generator.config
    state = fresh_state(engine)
    edit(state, "levels", background=False)
    per_level = [config.gaussians_at_level(l) for l in range(config.num_levels)]
    assert engine.level_counts(state) == {**{l: n for l, n in enumerate(per_level)}, -1: config.num_background_gaussians}
    for k in range(config.num_levels):
        edit(state, "levels", mode="up_to", level=k)
        assert engine.frame(state).num_gaussians == sum(per_level[: k + 1])
        edit(state, "levels", mode="only")
        assert engine.frame(state).num_gaussians == per_level[k] == config.num_points * 4**k
    edit(state, "levels", mode="all", background=True)
    assert engine.frame(state).num_gaussians == config.num_gaussians
    exported = engine.export_gaussians(replace(state, levels=replace(state.levels, mode="up_to", level=1)))
    assert exported.count_per_level() == {-1: config.num_background_gaussians, 0: per_level[0], 1: per_level[1]}
    kept = keep_levels(engine.gaussians(state.latent), [0, 2], background=False)
    assert kept.count_per_level() == {0: per_level[0], 2: per_level[2]}


def test_descendant_selection_is_exactly_the_subtree(engine):
    config = engine.generator.config
    state = fresh_state(engine)
    p = 5  # a level-0 Gaussian
    expected, offset = [p], 0
    for level in range(1, config.num_levels):
        offset += config.gaussians_at_level(level - 1)
        span = config.up_ratio**level  # level-`level` descendants of one level-0 parent
        expected += list(range(offset + p * span, offset + (p + 1) * span))
    got = engine.descendant_indices(state, p).tolist()
    assert sorted(got) == expected
    # Selecting it dims everything else but changes no count.
    before = engine.frame(state)
    edit(state, "levels", selected=p)
    after = engine.frame(state)
    assert after.num_gaussians == before.num_gaussians
    assert np.abs(before.image.astype(int) - after.image).mean() > 0.5


def test_interpolation_endpoints_are_the_seeds(engine):
    state = fresh_state(engine)
    edit(state, "latent", seed_a=3, seed_b=11)
    ends = {}
    for t in (0.0, 1.0):
        edit(state, "latent", interp=t)
        ends[t] = (engine.gaussians(state.latent).means.clone(), engine.frame(state).image)
    only = fresh_state(engine)
    for seed, t in ((3, 0.0), (11, 1.0)):
        edit(only, "latent", seed_a=seed)
        means, image = engine.gaussians(only.latent).means, engine.frame(only).image
        torch.testing.assert_close(ends[t][0], means, rtol=1e-5, atol=1e-5)
        assert np.abs(ends[t][1].astype(int) - image).max() <= 1
    edit(state, "latent", interp=0.5)
    middle = engine.gaussians(state.latent).means
    assert (middle - ends[0.0][0]).abs().max() > 1e-4 and (middle - ends[1.0][0]).abs().max() > 1e-4


def test_a_held_latent_is_latent_b(engine):
    """An inversion's ws as B: at interp 1 and psi 1 exactly those ws; psi truncates them toward w_avg
    as seeds are; names are unique per ws; a latent of another shape is refused."""
    from gsgan_core.models.generator import truncate
    from gsgan_core.models.hierarchy import w_avg_of

    config = engine.generator.config
    ws = torch.randn(1, config.num_ws, config.w_dim, generator=torch.Generator().manual_seed(4))
    name = engine.add_latent("inverted x", ws)
    assert name == "inverted x" and engine.add_latent("inverted x", ws.clone()) == name  # same ws, same name
    assert engine.add_latent("inverted x", ws + 1) == "inverted x (2)"
    state = fresh_state(engine)
    edit(state, "latent", latent_b=name, interp=1.0, psi=1.0)
    torch.testing.assert_close(engine.ws(state.latent), ws)
    expected = engine.generator.synthesize(ws).scene(0).means
    torch.testing.assert_close(engine.gaussians(state.latent).means, expected)
    edit(state, "latent", psi=0.5, cutoff=3)
    torch.testing.assert_close(engine.ws(state.latent), truncate(ws, w_avg_of(engine.generator), 0.5, 3))
    edit(state, "latent", psi=1.0, cutoff=0, interp=0.5)
    seed_a = engine.ws(LatentState(seed_a=state.latent.seed_a, psi=1.0))
    torch.testing.assert_close(engine.ws(state.latent), (seed_a + ws) / 2)
    with pytest.raises(ConfigError, match="shape"):
        engine.add_latent("too short", ws[:, :-1])
    edit(state, "latent", latent_b="never added")
    with pytest.raises(ConfigError, match="never added"):
        engine.frame(state)


def test_mixing_and_directions_change_the_output(engine):
    state = fresh_state(engine)
    base = engine.gaussians(state.latent).means.clone()
    edit(state, "latent", take_b=(True,) + (False,) * (len(engine.mixable_parts()) - 1))
    mixed = engine.gaussians(state.latent).means.clone()
    edit(state, "latent", take_b=(), directions=(2.0,))
    pushed = engine.gaussians(state.latent).means
    assert (mixed - base).abs().max() > 1e-4
    assert (pushed - base).abs().max() > 1e-4
    assert engine.directions.shape == (engine.num_directions, engine.generator.config.w_dim)
    assert torch.all(engine.direction_stds[:-1] >= engine.direction_stds[1:])  # sorted by variance


def test_pick_selects_a_level0_ancestor(engine):
    state = fresh_state(engine)
    edit(state, "levels", background=False)
    image = engine.frame(state).image
    ys, xs = np.nonzero(image.sum(-1) > 60)
    centre = len(ys) // 2
    picked = engine.pick(state, xs[centre], ys[centre])
    assert picked is not None
    gaussians = engine.gaussians(state.latent)
    assert int(gaussians.level[picked]) == 0
    assert engine.pick(state, 0, 0) is None or image[0, 0].sum() > 0  # empty corner: nothing picked
    assert engine.pick(state, -5, SIZE + 3) is None


def test_bad_checkpoint_keeps_the_last_good_model(engine, tmp_path):
    state = fresh_state(engine)
    good = engine.frame(state).image
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    generator = engine.generator
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        engine.load(bad)
    with pytest.raises(CheckpointError):
        engine.load(tmp_path / "missing.safetensors")
    assert engine.generator is generator
    np.testing.assert_array_equal(engine.frame(state).image, good)


def test_viewer_camera_matches_the_checkpoint_pose_and_gestures():
    pose = OrbitPose(yaw=0.3, pitch=-0.1)
    camera = camera_from_orbit_pose(pose)
    c2w_expected, K_expected = pose.cameras(dtype=torch.float32)
    c2w, K = viewer_cameras(camera)
    torch.testing.assert_close(c2w, c2w_expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(K, K_expected)
    moved = orbit(camera, dx=30, dy=-10)
    assert moved.yaw < camera.yaw and moved.pitch < camera.pitch
    assert np.linalg.norm(eye_position(moved) - np.asarray(moved.pivot)) == pytest.approx(camera.radius)
    assert zoom(camera, 2).radius == pytest.approx(camera.radius * 0.81)
    panned = pan(camera, dx=10, dy=0, viewport_height=100)
    assert np.linalg.norm(np.subtract(panned.pivot, camera.pivot)) > 0


def test_trajectories():
    base = ExplorerState()
    turntable = trajectory(base, "turntable", 8, pitch=0.2)
    assert [s.camera.pitch for s in turntable] == [0.2] * 8
    assert turntable[4].camera.yaw - turntable[0].camera.yaw == pytest.approx(math.pi)
    interp = trajectory(base, "interp", 7, seeds=[4, 5, 6, 9])
    ends = [(s.latent.seed_a, s.latent.seed_b, s.latent.interp) for s in (interp[0], interp[-1])]
    assert ends[0] == (4, 5, 0.0) and ends[1][1:] == (9, 1.0)
    assert [ping_pong(t) for t in (0.0, 0.5, 1.0, 1.5, 2.0)] == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_record_video_and_cancel_writes_nothing(engine, tmp_path):
    state = fresh_state(engine)
    frames = [[s] for s in trajectory(state, "wobble", 4)]
    out = tmp_path / "wobble.mp4"
    assert record(engine, frames, out, fps=10) == [out]
    assert count_frames(out) == 4
    old = out.read_bytes()
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        record(engine, frames, out, fps=10, progress=lambda done, total: cancel.set(), cancel=cancel)
    assert out.read_bytes() == old, "a cancelled recording must leave the older file as it was"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wobble.mp4"], "no temporary files left behind"
    gif = tmp_path / "w.gif"
    record(engine, frames[:3], gif, fps=10)
    assert count_frames(gif) == 3


def test_frame_writer_refuses_bad_outputs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        FrameWriter(blocker / "out.mp4", fps=30)
    with pytest.raises(OutputError, match="unsupported file type"):
        FrameWriter(tmp_path / "out.avi", fps=30)
    for fps, problem in ((0, "must be above 0"), (-5, "must be above 0"), (math.nan, "must be a finite number"),
                         (math.inf, "must be a finite number")):
        with pytest.raises(ConfigError, match=f"fps {problem}"):
            FrameWriter(tmp_path / "new" / "out.mp4", fps=fps)
    assert not (tmp_path / "new").exists(), "a refused fps is refused before the output folder is made"


def test_render_modes_and_display_edits(engine):
    state = fresh_state(engine)
    images = {}
    for mode in ("rgb", "depth", "alpha", "levels"):
        edit(state, "render", mode=mode)
        images[mode] = engine.frame(state).image
    alpha = images["alpha"]
    assert np.array_equal(alpha[..., 0], alpha[..., 1]) and alpha.max() > 200, "alpha is grey, opaque somewhere"
    for a, b in (("rgb", "depth"), ("rgb", "alpha"), ("rgb", "levels"), ("depth", "levels")):
        assert np.abs(images[a].astype(int) - images[b]).mean() > 0.5, f"{a} and {b} look the same"
    for change in ({"centres": True}, {"scale": 0.3}, {"color_by_level": True}):
        edited = fresh_state(engine)
        edit(edited, "levels", **change)
        assert np.abs(engine.frame(edited).image.astype(int) - images["rgb"]).mean() > 0.5, f"{change} changed nothing"
    edit(state, "render", mode="x-ray")
    with pytest.raises(ConfigError, match="unknown render mode"):
        engine.frame(state)
    edit(state, "render", mode="rgb", resolution=4)
    with pytest.raises(ConfigError, match="between 8 and 4096"):
        engine.frame(state)


def test_level_shares_of_the_view_are_cached_by_latent_and_camera(engine):
    state = fresh_state(engine)
    shares = engine.level_shares(state)
    assert sorted(shares) == [0, 1, 2, 3]  # the tiny preset's levels; the background is not measured
    assert shares[0] > 0.01  # level 0 draws the shape
    assert engine.level_shares(state) is shares  # same latent and camera: from the cache
    edit(state, "camera", yaw=state.camera.yaw + 0.5)
    assert engine.level_shares(state) is not shares


def test_preset_name_names_the_fields_that_differ_from_the_closest_preset():
    from gsgan_core.models.config import preset
    from gsgan_core.view.engine import preset_name

    assert preset_name(preset("tiny", image_resolution=32)) == "tiny"  # the training resolution is not a change
    assert preset_name(preset("heads128", background=False)) == "heads128 (background)"
    assert preset_name(preset("tiny", z_dim=3, w_dim=5, num_points=7, knn_k=2)) == "custom"


def test_state_parts_are_frozen_hashable_cache_keys(engine):
    state = fresh_state(engine)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.latent.seed_a = 3
    latent = LatentState(take_b=[True, False], directions=[1, 2])  # widgets hand out lists
    assert latent.take_b == (True, False) and latent.directions == (1.0, 2.0)
    assert hash(latent) == hash(LatentState(take_b=(True, False), directions=(1.0, 2.0)))
    snapshot = state.copy()
    edit(state, "camera", yaw=1.0)
    assert snapshot.camera.yaw != 1.0, "a snapshot does not follow later edits"
    first = engine.frame(state)
    renders = engine.stats.render_calls
    edit(state, "record", frames=7, out="elsewhere.gif")  # not an input of any image
    assert engine.frame(state) is first and engine.stats.render_calls == renders
    edit(state, "camera", yaw=0.0)
    edit(state, "camera", yaw=1.0)  # an equal part again: an equal key
    assert engine.frame(state) is first


def test_path_errors_share_one_base(tmp_path):
    from gsgan_core.errors import CheckpointError, DatasetError, PlyError

    for kind in (CheckpointError, PlyError, DatasetError, OutputError):
        err = kind(tmp_path / "x", "is odd")
        assert isinstance(err, PathError) and str(err) == f"{tmp_path / 'x'}: is odd" and err.problem == "is odd"


# ---------------------------------------------------------------------------- the CPU fast paths
FIELDS = ("means", "log_scales", "quats", "opacity_logits", "sh_dc")


@pytest.mark.parametrize("overrides", [{}, {"soft_clamp": True, "anchor_floor_pixels": 0.5},
                                       {"background": False, "view_dependent_color": False},
                                       {"attention": ("global", "global", "local", "local")}])
def test_cpu_generator_path_matches_the_reference(overrides):
    """Without grad on the CPU the generator folds norms, layerscales and heads into its matmuls and
    decodes in compiled kernels: the same Gaussians within float rounding, batched or not."""
    G = random_generator("tiny", **overrides)
    z = z_from_seeds([0, 1, 2], G.config.z_dim)
    view_dirs = torch.nn.functional.normalize(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    with torch.no_grad():
        ws = G.mapping(z, psi=0.8)
        G.cpu_inference = False
        reference = G.synthesize(ws, view_dirs)
        G.cpu_inference = True
        fast = G.synthesize(ws, view_dirs)
        single = G.synthesize(ws[:1], view_dirs[:1])
    assert G._cpu_plan is not None, "the CPU path did not run"
    for name in FIELDS:
        torch.testing.assert_close(getattr(fast, name), getattr(reference, name), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(getattr(single, name), getattr(reference, name)[:1], rtol=1e-4, atol=1e-4)
    assert torch.equal(fast.level, reference.level) and torch.equal(fast.parent, reference.parent)
    # A changed weight rebuilds the precomputed plan; grad mode takes the reference path.
    plan = G._cpu_plan
    with torch.no_grad():
        G.levels[-1].render_head.color.bias.add_(0.5)
        moved = G.synthesize(ws)
    assert G._cpu_plan is not plan and not torch.allclose(moved.sh_dc, fast.sh_dc)
    assert G.synthesize(ws).means.requires_grad


def test_cpu_generator_path_on_the_demo_checkpoint():
    from explorer.app import demo_checkpoint
    from gsgan_core.io.checkpoint import load_checkpoint

    G, _ = load_checkpoint(demo_checkpoint())
    with torch.inference_mode():
        ws = G.mapping(z_from_seeds([0, 7], G.config.z_dim), psi=0.7)
        G.cpu_inference = False
        reference = G.synthesize(ws)
        G.cpu_inference = True
        fast = G.synthesize(ws)
    for name in FIELDS:
        torch.testing.assert_close(getattr(fast, name), getattr(reference, name), rtol=1e-4, atol=1e-4)


def test_cpu_frames_use_the_compiled_rasterizer_and_numpy_uint8(engine):
    from gsgan_core.view.engine import to_uint8

    state = fresh_state(engine)
    engine.frame(state)
    assert engine.stats.backend == "compiled" and engine.stats.resolution == SIZE
    assert engine.backend_name().startswith("compiled (Numba")  # what a viewer uses, not grad mode's pick
    rgb = torch.tensor([[[-0.5, 0.0, 0.2], [0.5, 0.998, 1.7]]])
    expected = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    np.testing.assert_array_equal(to_uint8(rgb), expected)


def test_engine_threads_on_the_cpu(engine):
    import os

    from gsgan_core.view.engine import cpu_threads

    assert cpu_threads(1) == 1 and cpu_threads(64) == max(1, len(os.sched_getaffinity(0)) // 2)
    engine.generator_threads = 1
    before = torch.get_num_threads()
    edit(state := fresh_state(engine), "latent", seed_a=41)
    engine.frame(state)
    assert torch.get_num_threads() == before  # restored after the generator ran


def test_default_camera_frames_the_whole_model():
    """The default view holds the whole head: nothing drawn on the top, left or right edge, from
    any side, for several seeds (the checkpoint's own camera cut off the top of the head)."""
    from explorer.app import demo_checkpoint

    engine = Engine("cpu", direction_samples=256)
    engine.load(demo_checkpoint())
    camera = engine.default_camera()
    assert camera.radius > engine.info.camera.radius  # moved back from the training camera
    assert engine.default_camera() == camera  # computed once per model
    for seed in (0, 3):
        for yaw in (0.0, 1.6, 3.1):
            state = ExplorerState(latent=LatentState(seed_a=seed), camera=replace(camera, yaw=yaw),
                                  render=RenderSettings(resolution=64, mode="alpha"))
            alpha = engine.frame(state).image[..., 0]
            assert alpha.max() > 200, "the head is in the picture"
            edges = max(alpha[0].max(), alpha[:, 0].max(), alpha[:, -1].max())
            assert edges < 30, f"seed {seed}, yaw {yaw}: the head touches the top or a side ({edges})"


class SlowFrames:
    """Wraps engine.frame: each call sleeps first (and remembers the resolutions it was asked for)."""

    def __init__(self, engine, seconds: float):
        self.inner, self.seconds, self.sizes = engine.frame, seconds, []
        engine.frame = self

    def __call__(self, state):
        self.sizes.append(state.render.resolution)
        time.sleep(self.seconds)
        return self.inner(state)


def test_render_worker_renders_the_latest_state_and_hands_back_errors(engine):
    from gsgan_core.view.engine import RenderWorker

    slow = SlowFrames(engine, 0.3)
    worker = RenderWorker(engine)
    try:
        state = fresh_state(engine)
        start = time.perf_counter()
        keys = []
        for yaw in (0.1, 0.2, 0.3, 0.4):
            edit(state, "camera", yaw=yaw)
            keys.append(worker.request(state))
        assert time.perf_counter() - start < 0.1, "request() returns at once"
        assert worker.wait_idle(30)
        result = worker.poll()
        assert result.key == keys[-1] and result.error is None and result.frame.key == keys[-1]
        assert worker.poll() is None, "a result is handed out once"
        # The last one, and perhaps the first if it had started: the ones between were dropped unrendered.
        assert worker.delivered in (1, 2) and worker.delivered + worker.dropped == 4
        assert len(slow.sizes) == worker.delivered
        assert result.seconds >= 0.3 and result.generator_ran is False
        # An exception in the worker comes back in the result; the worker keeps going.
        edit(state, "render", mode="x-ray")
        worker.request(state)
        assert worker.wait_idle(30)
        failed = worker.poll()
        assert failed.frame is None and failed.error.startswith("ConfigError: unknown render mode")
        # One-off jobs run before waiting frames; their outcomes come back for the caller to handle.
        worker.submit(lambda e: e.num_levels())
        worker.submit(lambda e: 1 / 0)
        assert worker.wait_idle(30)
        outcomes = worker.finished_jobs()
        assert outcomes[0].value == engine.num_levels() and isinstance(outcomes[1].error, ZeroDivisionError)
        assert worker.idle
    finally:
        worker.close()


@pytest.mark.gpu
def test_render_worker_with_a_cuda_graph_on_the_gpu(checkpoint):
    """The explorer's GPU path: frames from the render worker thread, the synthesis replayed as a CUDA
    graph captured on another thread, equal to eager frames; a reload (a new capture) while the worker
    renders and an inversion runs on the GPU breaks neither."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: the explorer's GPU path (gsplat, CUDA graphs)")
    from gsgan_core.invert import InvertSettings, invert
    from gsgan_core.view.engine import RenderWorker

    graphed = Engine("cuda", cuda_graph=True, direction_samples=256)
    graphed.load(checkpoint)
    assert graphed._graphed is not None, graphed.graph_problem
    eager = Engine("cuda", direction_samples=256)
    eager.load(checkpoint)
    assert graphed.backend_name() == eager.backend_name() and "gsplat" in graphed.backend_name()
    worker = RenderWorker(graphed)
    try:
        for seed in (0, 3, 8):
            state = fresh_state(eager)
            edit(state, "latent", seed_a=seed)
            key = worker.request(state)
            assert worker.wait_idle(60)
            result = worker.poll()
            assert result.error is None and result.key == key
            assert np.abs(result.frame.image.astype(int) - eager.frame(state).image).max() <= 2
        target = eager.frame(fresh_state(eager)).image
        errors = []

        def run_inversion() -> None:
            try:
                invert(eager.generator, target, "auto", InvertSettings(search_steps=2).with_steps(20))
            except Exception as err:  # noqa: BLE001 - reported by the assertion below
                errors.append(f"inversion: {type(err).__name__}: {err}")

        inversion = threading.Thread(target=run_inversion)
        inversion.start()
        for i in range(3):
            graphed.load(checkpoint)  # captures a new graph while the worker and the inversion use the GPU
            for yaw in np.linspace(-0.5, 0.5, 5):
                state = fresh_state(eager)
                edit(state, "latent", seed_a=i)
                edit(state, "camera", yaw=float(yaw))
                worker.request(state)
                time.sleep(0.01)
            assert worker.wait_idle(60)
            result = worker.poll()
            if result is not None and result.error is not None:
                errors.append(result.error)
        inversion.join(120)
        assert not errors and graphed.graph_problem is None
    finally:
        worker.close()
