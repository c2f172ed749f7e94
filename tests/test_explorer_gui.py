"""The real explorer window under Xvfb (installed by `scripts/setup.sh --xvfb`, which the test
command runs), driven through its own callbacks and mouse handlers by tests/gui_driver.py."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import random_generator
from explorer.app import demo_checkpoint, display_problem
from gsgan_core.io.checkpoint import save_checkpoint
from gsgan_core.models.config import preset

DRIVER = Path(__file__).with_name("gui_driver.py")


def test_explorer_window_under_xvfb(tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: run `bash scripts/setup.sh --xvfb` (bash scripts/test.sh does)")
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, random_generator("tiny"), training={"kimg": 4.0}, dataset={"name": "unit", "resolution": 64})
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}  # the recent-files list goes here
    run = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x900x24", sys.executable, str(DRIVER), str(checkpoint), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert run.returncode == 0, f"driver failed:\n{run.stdout}\n{run.stderr}"
    r = json.loads((tmp_path / "out" / "result.json").read_text())

    assert r["empty_status"] == "no checkpoint (test)"
    assert "broken.safetensors" in r["broken_status"] and "could not load" in r["broken_status"]
    assert r["loaded"] and "preset tiny" in r["info"] and "L3: 4,096" in r["info"]
    assert r["view_shape"] == [512, 512, 3]
    # The view is not blank and changes with every input.
    for name, std in r["view_std"].items():
        assert std > 5, f"view looks blank at step {name!r} (std {std:.1f})"
    for step, change in r["view_change"].items():
        assert change > 0.5, f"view did not change for {step} (mean abs diff {change:.2f})"
    assert r["seed_state"] == 5
    assert r["orbit_yaw_change"] < -0.5 and r["orbit_generator_calls"] == 0
    assert r["yaw_widget_deg"] == pytest.approx(r["yaw_state_deg"], abs=1e-3), "camera widgets follow mouse orbits"
    assert "yaw 29 " in r["caption_after_yaw_change"], r["caption_after_yaw_change"]  # 0.5 rad, not a stale yaw
    assert r["zoom_ratio"] == pytest.approx(0.81)
    assert r["level_shown"] == r["level_expected"]
    shares = r["shares_text"].removeprefix("change without it: ").split(", ")  # "L0 0.412", ...
    assert [s.split()[0] for s in shares] == [f"L{k}" for k in range(4)], r["shares_text"]
    assert float(shares[0].split()[1]) > 0 and r["shares_text_off"] == ""
    assert r["selected"] is not None and r["selected_level"] == 0
    assert "render error" in r["render_error_status"] and "no-such-mode" in r["render_error_status"]
    assert r["record_frames"] == 4 and r["progress"] == pytest.approx(1.0)
    assert "wrote" in r["record_status"]
    assert r["ui_frames_while_recording"] >= 1, "the UI kept drawing while recording"
    assert r["screenshot_shape"] == [64, 64, 3]  # the current frame at the render resolution
    config = preset("tiny")
    # Export PLY: the current Gaussians under the level selection (levels up to 1, background off).
    assert r["ply_counts"] == {"0": config.gaussians_at_level(0), "1": config.gaussians_at_level(1)}, r["ply_status"]
    recent = json.loads((tmp_path / "config" / "gsgan" / "recent.json").read_text())
    assert recent == [str(checkpoint.resolve())]


def test_no_display_gives_a_clear_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from explorer.app import main; sys.exit(main())"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert run.returncode == 1
    assert "no display" in run.stderr and "xvfb-run" in run.stderr and "gsgan-render" in run.stderr
    assert display_problem({"DISPLAY": ":12345"}, "linux").startswith("no display: nothing listens")
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None


def test_demo_checkpoint_lookup(tmp_path):
    assert demo_checkpoint(tmp_path / "nothing-here") is None
    assert demo_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path / "b.safetensors", random_generator("tiny", background=False))
    save_checkpoint(tmp_path / "a.safetensors", random_generator("tiny", background=False))
    assert demo_checkpoint(tmp_path) == tmp_path / "a.safetensors"
    assert preset("tiny").num_levels == 4
