"""Training on CPU: a few steps of the tiny preset, exact resume, NaN and SIGTERM handling, DDP with gloo."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from gsgan_core.data.heads import make_heads_dataset
from gsgan_core.errors import CheckpointError, ConfigError, TrainingError
from gsgan_core.io.checkpoint import load_checkpoint
from gsgan_core.models.config import preset
from gsgan_core.models.generator import Generator
from gsgan_core.train import losses
from gsgan_core.train.config import TrainConfig, parse_args
from gsgan_core.train.loop import train
from gsgan_core.train.state import read_training_state

RES = 16  # the reference rasterizer on 2 CPU cores: keep images tiny


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "heads.zip"
    make_heads_dataset(path, 8, RES, seed=0, processes=1, progress=False)
    return str(path)


def tiny_config(data, outdir, **overrides) -> TrainConfig:
    values = dict(data=data, outdir=str(outdir), preset="tiny", batch=2, kimg=1.0, snap_kimg=1.0, log_steps=1,
                  workers=0, r1_interval=2, g_pose_cond=True, grid_seeds=2, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def read_log(outdir) -> list[dict]:
    lines = (outdir / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"loss/G"' in line]


def test_a_few_steps_learn_and_write_an_explorer_checkpoint(heads, tmp_path):
    outdir = tmp_path / "run"
    config = tiny_config(heads, outdir, max_steps=2, views=2, swd_images=4, snap_kimg=0.004, render_supersample=2)
    result = train(config)
    assert result.step == 2 and result.nimg == 4
    log = read_log(outdir)
    assert [r["step"] for r in log] == [1, 2]
    for record in log:
        for key, value in record.items():
            assert isinstance(value, (int, float)) and torch.isfinite(torch.tensor(float(value))), key
    assert log[0]["loss/r1"] > 0 and log[0]["loss/G_pose"] > 0  # R1 ran at step 0; contrastive pose is on
    swd = [json.loads(line) for line in (outdir / "log.jsonl").read_text().splitlines() if "metrics/swd" in line]
    assert len(swd) == 1 and swd[0]["metrics/swd"] > 0
    levels = [json.loads(line) for line in (outdir / "log.jsonl").read_text().splitlines() if "metrics/levels" in line]
    assert len(levels) == 1 and len(levels[0]["metrics/levels"]) == preset("tiny").num_levels
    assert levels[0]["metrics/levels"][0] > 0  # level 0 of any generator draws the head
    assert len(levels[0]["metrics/anchor_log_scale"]) == preset("tiny").num_levels - 1  # the last has none
    assert all(-8 <= s <= 0 for s in levels[0]["metrics/anchor_log_scale"])

    torch.manual_seed(config.seed)  # the same initial weights training started from
    initial = Generator(preset("tiny", image_resolution=RES, c_dim=25))
    changed = [name for name, p in result.G.named_parameters()
               if not torch.equal(p.detach(), initial.state_dict()[name])]
    assert len(changed) > 0.5 * len(list(initial.parameters()))

    for name in ("network-snapshot-final.safetensors", "network-latest.safetensors"):
        G, info = load_checkpoint(outdir / name)
        assert info.training["step"] == 2 and info.resolution == RES and G.config.c_dim == 25
        assert info.training["render_supersample"] == 2  # gsgan-metrics renders the fakes as training did
    assert (outdir / "fakes-final.png").stat().st_size > 0 and (outdir / "fakes-000000.004.png").exists()
    from gsgan_core.view.engine import Engine  # the explorer opens the snapshot directly

    engine = Engine(device="cpu", direction_samples=64)
    assert engine.load(outdir / "network-snapshot-final.safetensors").kimg == pytest.approx(0.004)


def test_resume_continues_exactly(heads, tmp_path):
    straight = train(tiny_config(heads, tmp_path / "straight", max_steps=4))
    train(tiny_config(heads, tmp_path / "split", max_steps=2))
    resumed = train(tiny_config(heads, tmp_path / "split", max_steps=2, resume=str(tmp_path / "split")))
    assert resumed.step == straight.step == 4
    assert [r["loss/G"] for r in read_log(tmp_path / "split")] == [r["loss/G"] for r in read_log(tmp_path / "straight")]
    assert [r["loss/D"] for r in read_log(tmp_path / "split")] == [r["loss/D"] for r in read_log(tmp_path / "straight")]
    for name in ("G", "D", "G_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    tensors, info = read_training_state(tmp_path / "split")
    assert info["progress"] == {"step": 4, "nimg": 8, "d_start_nimg": 0} and any(k.startswith("opt_D.") for k in tensors)


def test_a_resumed_run_takes_its_learning_rates_from_its_flags(heads, tmp_path):
    # Adam's load_state_dict would bring back the saved param_groups' lr; lowering it late in
    # training (the demo run did) must work.
    train(tiny_config(heads, tmp_path / "run", max_steps=1))
    assert read_training_state(tmp_path / "run")[1]["param_groups"]["opt_G"][0]["lr"] == 0.0025
    train(tiny_config(heads, tmp_path / "run", max_steps=1, resume=str(tmp_path / "run"), g_lr=0.0005, d_lr=0.0003))
    groups = read_training_state(tmp_path / "run")[1]["param_groups"]
    assert groups["opt_G"][0]["lr"] == 0.0005
    assert groups["opt_D"][0]["lr"] == pytest.approx(0.0003 * 2 / 3)  # lazy R1 every 2 steps


def test_adam_first_moment_is_saved_only_when_beta1_keeps_it(heads, tmp_path):
    train(tiny_config(heads, tmp_path / "beta0", max_steps=1))  # StyleGAN's betas (0, 0.99)
    train(tiny_config(heads, tmp_path / "beta5", max_steps=1, adam_beta1=0.5))
    beta0, _ = read_training_state(tmp_path / "beta0")
    beta5, _ = read_training_state(tmp_path / "beta5")
    assert not any(k.endswith(".exp_avg") for k in beta0) and any(k.endswith(".exp_avg_sq") for k in beta0)
    assert any(k.endswith(".exp_avg") for k in beta5)  # a real running average: kept
    resumed = train(tiny_config(heads, tmp_path / "beta5", max_steps=1, adam_beta1=0.5, resume=str(tmp_path / "beta5")))
    assert resumed.step == 2


def test_bfloat16_state_is_smaller_and_resumes_close(heads, tmp_path):
    train(tiny_config(heads, tmp_path / "full", max_steps=2))
    straight = train(tiny_config(heads, tmp_path / "straight", max_steps=3))
    train(tiny_config(heads, tmp_path / "small", max_steps=2, state_precision="bfloat16"))
    full, small = tmp_path / "full" / "training-state.safetensors", tmp_path / "small" / "training-state.safetensors"
    assert small.stat().st_size < 0.75 * full.stat().st_size
    tensors, _ = read_training_state(small)
    assert tensors["G.mapping.layers.0.weight"].dtype == torch.float32  # the trained networks stay exact
    assert {t.dtype for k, t in tensors.items() if k.startswith("G_ema.") and t.is_floating_point()} == {torch.bfloat16}
    assert {t.dtype for k, t in tensors.items() if k.endswith("exp_avg_sq")} == {torch.bfloat16}
    resumed = train(tiny_config(heads, tmp_path / "small", max_steps=1, resume=str(tmp_path / "small")))
    assert resumed.step == 3
    assert all(p.dtype == torch.float32 for p in resumed.G_ema.parameters())
    for a, b in zip(straight.G_ema.parameters(), resumed.G_ema.parameters()):
        assert torch.allclose(a, b, rtol=2e-2, atol=1e-3)  # bfloat16 rounding, not a different run


def test_max_minutes_stops_with_a_final_snapshot(heads, tmp_path):
    result = train(tiny_config(heads, tmp_path / "run", kimg=100.0, max_minutes=1e-6))
    assert result.step == 1  # the limit is checked after each step
    assert (tmp_path / "run" / "network-snapshot-final.safetensors").exists()
    assert read_training_state(tmp_path / "run")[1]["progress"]["step"] == 1


def test_resume_refuses_a_different_model_and_a_fresh_run_refuses_an_old_outdir(heads, tmp_path):
    train(tiny_config(heads, tmp_path / "run", max_steps=1))
    with pytest.raises(TrainingError, match="--d-pose projection does not fit the discriminator"):
        train(tiny_config(heads, tmp_path / "run", max_steps=1, resume=str(tmp_path / "run"), d_pose="projection"))
    with pytest.raises(TrainingError, match="already holds"):
        train(tiny_config(heads, tmp_path / "run", max_steps=1))


def test_resume_new_d_keeps_the_generator_and_starts_a_bigger_discriminator(heads, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(heads, run, max_steps=2))
    saved, _ = read_training_state(run)
    with pytest.raises(TrainingError, match="--d-channel-max 128 .*--resume-new-d"):  # a plain resume keeps D's shape
        train(tiny_config(heads, run, max_steps=1, resume=str(run), d_channel_max=128))
    with pytest.raises(ConfigError, match="--resume"):
        tiny_config(heads, tmp_path / "other", resume_new_d=True)

    # the new D learns for 2 steps (4 images) while G and G_ema stay exactly as saved
    bigger = dict(d_channel_base=4096, d_channel_max=128, d_warmup_kimg=0.004)
    warm = train(tiny_config(heads, run, max_steps=2, resume=str(run), resume_new_d=True, **bigger))
    assert warm.step == 4
    for name in ("G", "G_ema"):
        state = getattr(warm, name).state_dict()
        assert all(torch.equal(state[k], saved[f"{name}.{k}"].to(state[k].dtype)) for k in state), name
    old_d = {k[2:]: v for k, v in saved.items() if k.startswith("D.")}
    assert sum(v.numel() for v in warm.D.state_dict().values()) > sum(v.numel() for v in old_d.values())
    assert [r["loss/G"] for r in read_log(run)][-2:] == [0.0, 0.0] and read_log(run)[-1]["loss/D"] > 0
    tensors, info = read_training_state(run)
    assert info["progress"] == {"step": 4, "nimg": 8, "d_start_nimg": 4}
    assert info["config"]["d_channel_max"] == 128 and tensors["D.from_rgb.weight"].shape[0] == 128

    # the warm-up is over 4 images after the new D started, also across a plain resume: G moves again
    moved = train(tiny_config(heads, run, max_steps=1, resume=str(run), **bigger))
    assert moved.step == 5 and read_log(run)[-1]["loss/G"] != 0.0
    assert not torch.equal(moved.G.state_dict()["mapping.layers.0.weight"], warm.G.state_dict()["mapping.layers.0.weight"])


def test_init_g_fine_tunes_a_generator_checkpoint_with_a_new_discriminator(heads, tmp_path):
    train(tiny_config(heads, tmp_path / "run", max_steps=2))
    network = tmp_path / "run" / "network-latest.safetensors"  # a released file holds G_ema alone
    released, info = load_checkpoint(network)
    assert info.training["step"] == 2

    # the new D learns for 2 steps (4 images) while G and G_ema stay exactly the file's weights
    tune = tmp_path / "tune"
    warm = train(tiny_config(heads, tune, max_steps=2, init_g=str(network), d_warmup_kimg=0.004, d_channel_max=128))
    assert warm.step == 4 and warm.nimg == 8  # progress counts on from the file's
    for name in ("G", "G_ema"):
        state = getattr(warm, name).state_dict()
        assert all(torch.equal(state[k], v) for k, v in released.state_dict().items()), name
    assert [r["loss/G"] for r in read_log(tune)] == [0.0, 0.0] and read_log(tune)[-1]["loss/D"] > 0
    assert read_training_state(tune)[1]["progress"] == {"step": 4, "nimg": 8, "d_start_nimg": 4}
    moved = train(tiny_config(heads, tune, max_steps=1, resume=str(tune), d_channel_max=128))  # then G trains
    assert moved.step == 5 and read_log(tune)[-1]["loss/G"] != 0.0
    direct = train(tiny_config(heads, tmp_path / "direct", max_steps=1, init_g=str(network)))  # no warm-up: at once
    assert read_log(tmp_path / "direct")[-1]["loss/G"] != 0.0
    assert not torch.equal(direct.G.state_dict()["mapping.layers.0.weight"], released.state_dict()["mapping.layers.0.weight"])

    # a file whose generator the flags do not build, a file that is no checkpoint, both ways at once
    with pytest.raises(TrainingError, match=r"network-latest.safetensors: --g-anchor-floor-pixels 0.5 does not fit "
                                            r"the generator in the file \(its anchor_floor_pixels is 0.0\)"):
        train(tiny_config(heads, tmp_path / "a", max_steps=1, init_g=str(network), g_anchor_floor_pixels=0.5))
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        train(tiny_config(heads, tmp_path / "b", max_steps=1, init_g=str(tmp_path / "junk.safetensors")))
    assert not (tmp_path / "b").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="--init-g .* --resume"):
        tiny_config(heads, tune, init_g=str(network), resume=str(tune))


def test_resume_modulate_widens_a_trained_generator_exactly_and_keeps_its_adam_state(heads, tmp_path):
    import dataclasses

    from gsgan_core.train.state import modulate_training_state

    run = tmp_path / "run"
    train(tiny_config(heads, run, max_steps=2))  # tiny: levels 0-1 modulated, 2-3 plain
    old_config, _ = load_checkpoint(run / "network-latest.safetensors")
    old_config = old_config.config
    new_config = dataclasses.replace(old_config, modulated=(True, True, True, True))
    tensors, info = read_training_state(run)
    wide, wide_info = modulate_training_state(tensors, info, old_config, new_config)

    def networks(config, state, name):
        G = Generator(config).eval()
        G.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})  # strict
        return G

    z, c = torch.randn(2, old_config.z_dim), torch.randn(2, old_config.c_dim)
    with torch.no_grad():
        for name in ("G", "G_ema"):
            before, after = networks(old_config, tensors, name)(z, c), networks(new_config, wide, name)(z, c)
            torch.testing.assert_close(after.means, before.means, rtol=0, atol=1e-5)
            torch.testing.assert_close(after.sh_dc, before.sh_dc, rtol=0, atol=1e-5)
    with torch.device("meta"):
        old_names = [n for n, _ in Generator(old_config).named_parameters()]
        new_names = [n for n, _ in Generator(new_config).named_parameters()]
    for name in ("mapping.layers.0.weight", "levels.3.render_head.color.weight"):  # moments follow their weights
        assert torch.equal(wide[f"opt_G.{new_names.index(name)}.exp_avg_sq"],
                           tensors[f"opt_G.{old_names.index(name)}.exp_avg_sq"])
    new_weight = new_names.index("levels.3.blocks.0.norm1.affine.weight")
    assert not any(k.startswith(f"opt_G.{new_weight}.") for k in wide)  # Adam starts it from zero
    assert wide_info["param_groups"]["opt_G"][0]["params"] == list(range(len(new_names)))

    # from the command line's flags: refused without --resume-modulate, and it only adds levels
    with pytest.raises(TrainingError, match="--g-modulated 1,1,1,1 .*--resume-modulate true w-modulates"):
        train(tiny_config(heads, run, max_steps=1, resume=str(run), g_modulated="1,1,1,1"))
    with pytest.raises(TrainingError, match="cannot become plain: pass --g-modulated 1,1,0,0"):
        train(tiny_config(heads, run, max_steps=1, resume=str(run), g_modulated="1,0,1,1", resume_modulate=True))
    with pytest.raises(ConfigError, match="0 or 1"):
        tiny_config(heads, run, g_modulated="1,1,2,1")
    widened = train(tiny_config(heads, run, max_steps=1, resume=str(run), g_modulated="1,1,1,1", resume_modulate=True))
    assert widened.step == 3 and widened.G.config.modulated == (True, True, True, True)
    assert widened.G.levels[3].blocks[0].norm1.affine.weight.abs().sum() > 0  # the new weights train
    assert read_training_state(run)[1]["config"]["g_modulated"] == "1,1,1,1"
    resumed = train(tiny_config(heads, run, max_steps=1, resume=str(run)))  # the widened state keeps its levels
    assert resumed.step == 4 and resumed.G.config.modulated == (True, True, True, True)
    assert train(tiny_config(heads, run, max_steps=1, resume=str(run), g_modulated="1,1,1,1")).step == 5
    with pytest.raises(TrainingError, match="--g-modulated 1,1,0,0 does not fit the generator"):
        train(tiny_config(heads, run, max_steps=1, resume=str(run), g_modulated="1,1,0,0"))
    # the preset's own levels, spelt out, are the same generator as the empty default
    train(tiny_config(heads, tmp_path / "plain", max_steps=1))
    assert train(tiny_config(heads, tmp_path / "plain", max_steps=1, resume=str(tmp_path / "plain"),
                             g_modulated="1,1,0,0")).step == 2


def test_a_state_from_before_a_model_field_existed_resumes_with_its_default(heads, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    train(tiny_config(heads, tmp_path / "run", max_steps=1))
    path = tmp_path / "run" / "training-state.safetensors"
    with safe_open(str(path), framework="pt") as f:  # rewrite it as an older version did: no g_anchor_floor_pixels,
        metadata = f.metadata()  # and no networks' configs: the flags it saved describe them
    config = json.loads(metadata["config"])
    del config["g_anchor_floor_pixels"]
    metadata = {k: v for k, v in metadata.items() if k not in ("models", "dataset")}
    save_file(load_file(path), path, metadata={**metadata, "config": json.dumps(config)})
    assert train(tiny_config(heads, tmp_path / "run", max_steps=1, resume=str(path))).step == 2
    with pytest.raises(TrainingError, match="--g-anchor-floor-pixels 0.5 does not fit the generator"):
        train(tiny_config(heads, tmp_path / "run", max_steps=1, resume=str(path), g_anchor_floor_pixels=0.5))


def test_training_refuses_a_resolution_the_discriminator_cannot_halve(tmp_path):
    data = tmp_path / "odd.zip"
    make_heads_dataset(data, 2, 24, seed=0, processes=1, progress=False)
    with pytest.raises(TrainingError, match="power of two"):
        train(tiny_config(str(data), tmp_path / "run", max_steps=1))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_snapshot(heads, tmp_path, monkeypatch):
    calls = []

    def poisoned_center(anchors):
        calls.append(1)
        value = losses.center_loss.__wrapped__(anchors)
        return value * float("nan") if len(calls) == 3 else value

    poisoned_center.__wrapped__ = losses.center_loss
    monkeypatch.setattr(losses, "center_loss", poisoned_center)
    outdir = tmp_path / "run"
    with pytest.raises(TrainingError, match="step 2"):
        train(tiny_config(heads, outdir, snap_kimg=0.002, r1_interval=0))
    G, info = load_checkpoint(outdir / "network-latest.safetensors")
    assert info.training["step"] == 2 and not (outdir / "network-snapshot-final.safetensors").exists()
    assert all(torch.isfinite(p).all() for p in G.parameters())


def test_sigterm_writes_a_final_snapshot_and_stops(heads, tmp_path, monkeypatch):
    original = losses.knn_loss

    def knn_then_sigterm(anchors, k):
        os.kill(os.getpid(), signal.SIGTERM)  # as if the scheduler stopped the job during step 0
        return original(anchors, k)

    monkeypatch.setattr(losses, "knn_loss", knn_then_sigterm)
    outdir = tmp_path / "run"
    result = train(tiny_config(heads, outdir))
    assert result.step == 1
    _, info = load_checkpoint(outdir / "network-snapshot-final.safetensors")
    assert info.training["step"] == 1
    assert read_training_state(outdir)[1]["progress"]["step"] == 1


def test_command_line_flags_cover_the_config(tmp_path, capsys):
    config = parse_args(["--data", "d.zip", "--outdir", str(tmp_path), "--r1-gamma", "0.5", "--g-pose-cond", "false",
                         "--d-pose", "projection", "--views", "4"])
    assert (config.r1_gamma, config.g_pose_cond, config.d_pose, config.views) == (0.5, False, "projection", 4)
    assert parse_args(["--resume", str(tmp_path)]).outdir == str(tmp_path)  # resume continues in its run folder
    from gsgan_core.cli import train_main

    assert train_main(["--data", str(tmp_path / "missing.zip"), "--outdir", str(tmp_path / "o")]) == 1
    assert "missing.zip: not found" in capsys.readouterr().err


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from gsgan_core.train.config import TrainConfig
    from gsgan_core.train.loop import train
    data, outdir = sys.argv[1], sys.argv[2]
    config = TrainConfig(data=data, outdir=outdir, preset="tiny", batch=2, kimg=1.0, snap_kimg=1.0, workers=0,
                         max_steps=2, r1_interval=2, d_channel_base=1024, d_channel_max=64, grid_seeds=2,
                         device="cpu", log_steps=1)
    result = train(config)
    flat = {name: torch.cat([p.detach().flatten() for p in getattr(result, name).parameters()])
            for name in ("G", "D", "G_ema")}
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, flat)
    if dist.get_rank() == 0:
        for name in flat:
            assert all(torch.equal(g[name], gathered[0][name]) for g in gathered), name + " out of sync"
        print("IN SYNC", dist.get_world_size(), result.step, flush=True)
""")


def test_ddp_two_cpu_processes_stay_in_sync(heads, tmp_path):
    script = tmp_path / "ddp_check.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
         str(script), heads, str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "IN SYNC 2 2" in proc.stdout
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2]  # one log, written by rank 0 only
    assert load_checkpoint(tmp_path / "run" / "network-snapshot-final.safetensors")[1].training["step"] == 2


def test_the_device_is_read_as_every_command_reads_it(monkeypatch):
    from gsgan_core.train.distributed import init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed("cpu").device == torch.device("cpu")
    if not torch.cuda.is_available():
        assert init_distributed("auto").device == torch.device("cpu")
        with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
            init_distributed("cuda")


def test_data_order_is_a_function_of_the_step_and_splits_over_processes():
    from gsgan_core.train.data import StepBatches
    from gsgan_core.train.distributed import Dist

    def batches(rank, world, start, count):
        it = iter(StepBatches(10, 4, Dist(rank, world), seed=3, start_step=start))
        return [next(it) for _ in range(count)]

    one = batches(0, 1, 0, 5)  # 20 positions = two shuffled epochs of 10
    flat = [i for b in one for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert batches(0, 1, 3, 2) == one[3:5]  # resuming at step 3 gives the same batches
    for step in range(5):  # two processes take the two halves of the same global batch
        assert batches(0, 2, step, 1)[0] + batches(1, 2, step, 1)[0] == one[step]


def test_every_flag_has_help():
    from gsgan_core.train.config import build_parser

    for action in build_parser()._actions:
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no help: give its TrainConfig field a # comment"


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-to-group"])
def test_stopping_the_command_line_saves_and_exits_cleanly(heads, tmp_path, how):
    """Ctrl-C to a real `python -m gsgan_core.train` with a data worker, or SIGTERM to its whole
    process group as a job scheduler sends it: a final snapshot and exit status 0."""
    import time

    outdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gsgan_core.train", "--data", heads, "--outdir", str(outdir), "--preset", "tiny",
         "--batch", "2", "--workers", "1", "--log-steps", "1", "--d-channel-base", "1024", "--d-channel-max", "64",
         "--grid-seeds", "2", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not (outdir / "log.jsonl").exists() or not (outdir / "log.jsonl").read_text():
            assert proc.poll() is None and time.time() < deadline, "training did not start"
            time.sleep(0.2)
        if how == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGTERM)  # the trainer and its data worker alike
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-2000:]
    assert "stop requested" in output
    _, info = load_checkpoint(outdir / "network-snapshot-final.safetensors")
    assert info.training["step"] >= 1
    assert read_training_state(outdir)[1]["progress"]["step"] == info.training["step"]


def _infonce_rank(rank, world, port, path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    images, cameras = torch.randn(8, 16), torch.randn(8, 16)  # the global batch, the same on every rank
    rows = slice(rank * 4, rank * 4 + 4)
    image_pose = images[rows].clone().requires_grad_(True)
    camera_pose = cameras[rows].clone().requires_grad_(True)
    loss = losses.infonce_pose_loss(image_pose, camera_pose, 0.1)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    torch.save({"loss": total / world, "image_grad": image_pose.grad, "camera_grad": camera_pose.grad},
               f"{path}.{rank}")
    dist.destroy_process_group()


def test_infonce_under_ddp_equals_one_big_batch(tmp_path):
    """Each process contrasts its images with every process's cameras; with gradients averaged over
    processes (as training does) that is exactly the loss and gradients of one process on the whole batch."""
    import torch.multiprocessing as mp

    mp.spawn(_infonce_rank, args=(2, 29533, str(tmp_path / "r")), nprocs=2)
    torch.manual_seed(0)
    images = torch.randn(8, 16, requires_grad=True)
    cameras = torch.randn(8, 16, requires_grad=True)
    single = losses.infonce_pose_loss(images, cameras, 0.1)
    single.backward()
    parts = [torch.load(tmp_path / f"r.{rank}", weights_only=True) for rank in range(2)]
    assert torch.allclose(parts[0]["loss"], single.detach(), atol=1e-6)
    for rank, part in enumerate(parts):
        rows = slice(rank * 4, rank * 4 + 4)
        assert torch.allclose(part["image_grad"] / 2, images.grad[rows], atol=1e-6)  # / 2: DDP's average
        assert torch.allclose(part["camera_grad"] / 2, cameras.grad[rows], atol=1e-6)


def test_a_state_of_format_version_1_is_refused_with_the_reason(heads, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    train(tiny_config(heads, tmp_path / "run", max_steps=1))
    path = tmp_path / "run" / "training-state.safetensors"
    with safe_open(str(path), framework="pt") as f:  # as version 1 wrote it: no format_version
        metadata = {k: v for k, v in f.metadata().items() if k != "format_version"}
    save_file(load_file(path), path, metadata=metadata)
    with pytest.raises(TrainingError, match="format version 1.*equalised-lr"):
        train(tiny_config(heads, tmp_path / "run", max_steps=1, resume=str(path)))


def test_the_official_architecture_trains_and_resumes(heads, tmp_path):
    """gsgan-tiny is the official GSGAN network at test size: it trains, snapshots as architecture
    'gsgan' with the official camera model, resumes, and refuses the lite architecture's switches."""
    outdir = tmp_path / "official"
    result = train(tiny_config(heads, outdir, preset="gsgan-tiny", max_steps=2, snap_kimg=0.004))
    assert result.step == 2
    assert all(torch.isfinite(torch.tensor(float(v))) for r in read_log(outdir) for v in r.values())
    G, info = load_checkpoint(outdir / "network-latest.safetensors")
    assert info.config.architecture == "gsgan" and info.config.camera_model == "gsgan"
    assert type(G).__name__ == "GSGANGenerator" and info.config.image_resolution == RES
    resumed = train(tiny_config(heads, outdir, preset="gsgan-tiny", resume=str(outdir), max_steps=1))
    assert resumed.step == 3
    with pytest.raises(ConfigError, match="--g-soft-clamp applies to the lite architecture"):
        train(tiny_config(heads, tmp_path / "x", preset="gsgan-tiny", g_soft_clamp=True, max_steps=1))


# ----------------------------------------------------------------------------- resume from what the run saved
def _cli_run(heads, outdir, *flags):
    from gsgan_core.cli import train_main

    return train_main(["--data", heads, "--outdir", str(outdir), "--workers", "0", "--device", "cpu", *flags])


@pytest.mark.parametrize("preset_name", ["tiny", "gsgan-tiny"])
def test_resume_alone_continues_the_run_with_every_saved_setting(heads, tmp_path, capsys, preset_name):
    from gsgan_core.cli import train_main

    run = tmp_path / "run"
    assert _cli_run(heads, run, "--preset", preset_name, "--batch", "2", "--kimg", "0.008", "--max-steps", "2",
                    "--snap-kimg", "0.006", "--log-steps", "1", "--grid-seeds", "1", "--grid-yaws", "0,0.5",
                    "--r1-interval", "2", "--level-images", "0") == 0
    options = (run / "training_options.json").read_text()
    assert json.loads(options)["preset"] == preset_name

    assert train_main(["--resume", str(run)]) == 0  # alone: every setting is the run's, max-steps 2 included
    resumed = json.loads((run / "training_options.json").read_text())
    assert resumed == {**json.loads(options), "resume": str(run)}  # not rewritten with defaults
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4]  # --log-steps 1, --batch 2
    _, info = load_checkpoint(run / "network-snapshot-final.safetensors")
    assert info.training == {"kimg": 0.008, "step": 4, "render_supersample": 1}  # --kimg 0.008 reached
    assert (run / f"network-snapshot-{0.006:010.3f}.safetensors").exists()  # --snap-kimg 0.006
    import imageio.v3 as iio

    assert iio.imread(run / "fakes-final.png").shape == (RES, 2 * RES, 3)  # --grid-seeds 1 x --grid-yaws 0,0.5
    capsys.readouterr()

    # flags that may change do; the rest stays the run's
    assert train_main(["--resume", str(run), "--kimg", "0.012", "--max-steps", "0", "--g-lr", "0.001"]) == 0
    saved = json.loads((run / "training_options.json").read_text())
    assert (saved["kimg"], saved["max_steps"], saved["g_lr"]) == (0.012, 0, 0.001)
    assert {k: v for k, v in saved.items() if k not in ("kimg", "max_steps", "g_lr", "resume")} == \
           {k: v for k, v in json.loads(options).items() if k not in ("kimg", "max_steps", "g_lr", "resume")}
    assert read_training_state(run)[1]["progress"]["step"] == 6

    # flags that cannot change are refused with one line naming the flag, before any work
    state = (run / "training-state.safetensors").read_bytes()
    built = preset(preset_name)
    conditioned = not built.c_zero if built.architecture == "gsgan" else built.c_dim > 0  # the preset's
    for flags, says in [(["--d-channel-max", "128"], "--d-channel-max 128 does not fit the discriminator"),
                        (["--preset", "lite256"], "--preset lite256"),
                        (["--resolution", "32"], "--resolution 32 does not fit the generator"),
                        (["--batch", "4"], "--batch 4: a resumed run keeps its batch (2)"),
                        (["--g-pose-cond", str(not conditioned).lower()],
                         f"--g-pose-cond {not conditioned} does not fit the generator")]:
        capsys.readouterr()
        assert train_main(["--resume", str(run), *flags]) == 1, flags
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1 + err.count("checking images"), err
    assert (run / "training-state.safetensors").read_bytes() == state
    assert json.loads((run / "training_options.json").read_text()) == saved


def test_resume_refuses_other_data_but_follows_the_same_data_elsewhere(heads, tmp_path):
    import shutil

    run = tmp_path / "run"
    train(tiny_config(heads, run, max_steps=1))
    moved = tmp_path / "moved.zip"
    shutil.copy(heads, moved)
    assert train(TrainConfig(resume=str(run), data=str(moved), max_steps=1)).step == 2  # the same dataset, moved
    other = tmp_path / "other.zip"
    make_heads_dataset(other, 4, RES, seed=1, processes=1, progress=False)
    with pytest.raises(TrainingError, match=r"--data .*other.zip is not the run's dataset .*8 images at 16 px"):
        train(TrainConfig(resume=str(run), data=str(other)))
    same_size = tmp_path / "same_size.zip"  # as many images, as large: told apart by its cameras
    make_heads_dataset(same_size, 8, RES, seed=1, processes=1, progress=False)
    with pytest.raises(TrainingError, match=r"same_size.zip is not the run's dataset .*other camera labels"):
        train(TrainConfig(resume=str(run), data=str(same_size)))


def test_resume_never_writes_into_another_run(heads, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(tiny_config(heads, first, max_steps=1))
    train(tiny_config(heads, second, max_steps=1, seed=1))
    kept = {p.name: p.read_bytes() for p in second.iterdir() if p.is_file()}
    with pytest.raises(TrainingError, match=r"second already holds another training run; --resume .*first"):
        train(TrainConfig(resume=str(first), outdir=str(second), max_steps=1))
    assert {p.name: p.read_bytes() for p in second.iterdir() if p.is_file()} == kept
    assert train(TrainConfig(resume=str(first), outdir=str(tmp_path / "third"), max_steps=1)).step == 2


def test_interrupted_writes_are_removed_at_the_next_start_or_resume(heads, tmp_path, capsys):
    run = tmp_path / "run"

    def killed_write(path):  # a writer killed with SIGKILL in the middle of gsgan's atomic write
        code = ("import os, sys\nfrom gsgan_core.io.atomic import atomic_path\n"
                "cm = atomic_path(sys.argv[1]); tmp = cm.__enter__(); tmp.write_bytes(b'x' * 1000)\n"
                "os.kill(os.getpid(), 9)")
        subprocess.run([sys.executable, "-c", code, str(path)], check=False)

    run.mkdir()
    killed_write(run / "training-state.safetensors")  # killed during the first snapshot: no state yet
    assert len(list(run.glob(".training-state.safetensors.*.tmp"))) == 1
    train(tiny_config(heads, run, max_steps=1, level_images=0))  # a start removes it
    assert not list(run.glob(".*.tmp"))

    for name in ("training-state.safetensors", "network-snapshot-final.safetensors", "fakes-final.png"):
        killed_write(run / name)
    others = [run / "notes.tmp", run / ".training-state.safetensors.tmp", run / ".mine.abcdefgh.tmp",
              run / "sub" / ".training-state.safetensors.abcdefgh.tmp", tmp_path / ".training-state.safetensors.abcdefgh.tmp"]
    for path in others:  # not gsgan's pattern, or not in the run folder: left alone
        path.parent.mkdir(exist_ok=True)
        path.write_text("keep")
    assert len(list(run.glob(".*.*.tmp"))) == 5
    capsys.readouterr()
    train(tiny_config(heads, run, max_steps=1, level_images=0, resume=str(run)))  # a resume removes them
    assert "removed 3 unfinished write(s)" in capsys.readouterr().out
    assert sorted(p.name for p in run.glob(".*.tmp")) == [".mine.abcdefgh.tmp", ".training-state.safetensors.tmp"]
    assert all(path.read_text() == "keep" for path in others)


def test_a_nan_at_the_first_step_does_not_promise_a_snapshot(heads, tmp_path, monkeypatch):
    monkeypatch.setattr(losses, "center_loss", lambda anchors: anchors.sum() * float("nan"))
    with pytest.raises(TrainingError, match="step 0") as caught:
        train(tiny_config(heads, tmp_path / "run"))
    assert "no snapshot was written yet" in str(caught.value) and "kept" not in str(caught.value)
    assert not (tmp_path / "run" / "network-latest.safetensors").exists()


def test_numeric_flags_are_checked_before_any_work(heads, tmp_path, capsys):
    from gsgan_core.cli import train_main

    for flag, value, says in [("--g-lr", "-1", "--g-lr must be > 0, got -1.0"), ("--g-lr", "nan", "--g-lr must be a finite"),
                              ("--kimg", "-5", "--kimg must be > 0"), ("--kimg", "nan", "--kimg must be a finite"),
                              ("--d-lr", "inf", "--d-lr must be a finite"), ("--batch", "0", "--batch must be >= 1"),
                              ("--c-swap-prob", "1.5", "--c-swap-prob must be >= 0 and <= 1"),
                              ("--adam-beta2", "1", "--adam-beta2 must be >= 0 and < 1"),
                              ("--snap-kimg", "0", "--snap-kimg must be >= 0.001"), ("--device", "gpu", "--device must be one of")]:
        assert train_main(["--data", heads, "--outdir", str(tmp_path / "run"), flag, value]) == 1
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_every_numeric_setting_refuses_values_outside_its_limits():
    """Generated from the settings' own limits: each bound, crossed, and non-finite values."""
    import dataclasses
    import math

    from gsgan_core.train.config import flag_fields

    tried = 0
    for f in flag_fields():
        if f.type not in ("int", "float"):
            continue
        meta, bad = f.metadata, []
        kind = {"int": int, "float": float}[f.type]
        step = 1 if f.type == "int" else 1e-3 * max(abs(f.default or 0), 1)
        bad += [meta["low"] - step] if "low" in meta else []
        bad += [meta["above"]] if "above" in meta else []
        bad += [meta["high"] + step] if "high" in meta else []
        bad += [meta["below"]] if "below" in meta else []
        bad += [math.nan, math.inf, -math.inf] if f.type == "float" else []
        for value in bad:
            with pytest.raises(ConfigError, match=f"^--{f.name.replace('_', '-')} must be"):
                dataclasses.replace(TrainConfig(), **{f.name: value})
            tried += 1
        for value in [v for v in (meta.get("low"), meta.get("high")) if v is not None]:
            dataclasses.replace(TrainConfig(), **{f.name: kind(value)})  # the bounds themselves pass
    assert tried > 60


def test_tiny_presets_size_both_networks_and_the_first_steps_are_logged(heads, tmp_path, capsys):
    run = tmp_path / "run"
    config = TrainConfig(data=heads, outdir=str(run), preset="tiny", batch=2, kimg=1.0, max_steps=5, workers=0,
                         device="cpu", grid_seeds=1, level_images=0)  # no D flags, --log-steps 20
    result = train(config)
    assert result.D.config.channel_max == 64 and result.D.from_rgb.weight.shape[0] == 64
    assert (run / "training-state.safetensors").stat().st_size < 10 * 2**20
    assert [r["step"] for r in read_log(run)] == [1, 2, 4]  # 1, 2, 4, ... before the first --log-steps
    captured = capsys.readouterr()
    assert "step 1 (kimg 0.002)" in captured.out + captured.err  # on the console too
    assert json.loads((run / "training_options.json").read_text())["d_channel_max"] is None  # the preset's


def test_init_g_takes_the_architecture_from_the_file(heads, tmp_path):
    from gsgan_core.io.checkpoint import save_checkpoint

    torch.manual_seed(0)  # a generator trained with non-default flags (like the demo: no pose input, no background)
    G = Generator(preset("tiny", image_resolution=RES, background=False, anchor_floor_pixels=0.5))
    save_checkpoint(tmp_path / "g.safetensors", G, training={"kimg": 0.1, "step": 50})
    tuned = train(TrainConfig(data=heads, outdir=str(tmp_path / "tune"), init_g=str(tmp_path / "g.safetensors"),
                              batch=2, max_steps=1, workers=0, device="cpu", grid_seeds=1, level_images=0))
    assert tuned.G.config == G.config and tuned.step == 51  # no G flags needed
    assert tuned.D.config.channel_max == 64  # the D of the file's preset (tiny)
    assert json.loads((tmp_path / "tune" / "training_options.json").read_text())["preset"] == "tiny"
    with pytest.raises(TrainingError, match="--preset heads128 is not the generator in the file"):
        train(TrainConfig(data=heads, outdir=str(tmp_path / "x"), init_g=str(tmp_path / "g.safetensors"),
                          preset="heads128", max_steps=1, device="cpu"))
    with pytest.raises(TrainingError, match="--g-background True does not fit the generator in the file"):
        train(TrainConfig(data=heads, outdir=str(tmp_path / "x"), init_g=str(tmp_path / "g.safetensors"),
                          g_background=True, given=frozenset({"g_background"}), max_steps=1, device="cpu"))


def test_a_run_from_its_parts(heads, tmp_path):
    from gsgan_core.train.data import real_batches
    from gsgan_core.train.run import setup_run
    from gsgan_core.train.step import LOSS_NAMES, train_step

    run = setup_run(tiny_config(heads, tmp_path / "run"))
    batches = real_batches(run.dataset, run.config.batch, run.world, run.config.seed, 0, workers=0)
    out = train_step(run, next(batches))
    assert set(LOSS_NAMES) <= set(out) and all(torch.isfinite(out[n]) for n in LOSS_NAMES)
    assert (run.progress.step, run.progress.nimg) == (1, 2) and out["ema_beta"] < 1
    assert not (tmp_path / "run").exists()  # the parts write nothing; RunLogger does
