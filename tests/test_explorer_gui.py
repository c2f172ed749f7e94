"""The real explorer window under Xvfb (installed by `scripts/setup.sh --xvfb`, which the test
command runs), driven through its own callbacks and mouse handlers by tests/gui_driver.py."""

import json
import math
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
    assert r["loaded"] and "preset tiny" in r["info"] and "64 px" in r["info"]
    config = preset("tiny")
    # Gaussians per level in table cells (a cell never wraps, so "16,384" cannot break), and every
    # line of the panel's text fits its width (nothing clipped).
    assert r["level_cells"] == {str(k): f"{config.gaussians_at_level(k):,}" for k in range(4)} | {
        "-1": f"{config.num_background_gaussians:,}"}
    assert r["info_line_widths"] and max(r["info_line_widths"]) < r["panel_width"] - 20, r
    # The default view frames the model: the pivot at the Gaussians' centre, not the pose's.
    assert r["default_camera_is_framed"]
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
    shares = r["shares_text"].split(", ")  # "L0 0.412", ...
    assert [s.split()[0] for s in shares] == [f"L{k}" for k in range(4)], r["shares_text"]
    assert float(shares[0].split()[1]) > 0 and r["shares_text_off"] == ""
    assert all(len(cell) == 5 and float(cell) >= 0 for cell in r["share_cells"]), r["share_cells"]  # "0.412"
    assert r["share_cells_off"] == ["-"] * 4
    # Colour by level has a legend, in the palette's colours, shown only while the view colours by level.
    assert not r["legend_shown_before"] and r["legend_shown_checkbox"] and r["legend_shown_mode"]
    assert not r["legend_shown_after"]
    from gsgan_core.view.edits import BACKGROUND_COLOUR, LEVEL_PALETTE

    expected = {str(k): [round(c * 255) for c in LEVEL_PALETTE[k]] for k in range(4)}
    expected["-1"] = [round(c * 255) for c in BACKGROUND_COLOUR]
    assert r["legend_colours"] == expected
    assert r["selected"] is not None and r["selected_level"] == 0
    assert "render error" in r["render_error_status"] and "no-such-mode" in r["render_error_status"]
    assert r["record_frames"] == 4 and r["progress"] == pytest.approx(1.0)
    assert "wrote" in r["record_status"]
    assert r["ui_frames_while_recording"] >= 1, "the UI kept drawing while recording"
    assert r["screenshot_shape"] == [64, 64, 3]  # the current frame at the render resolution
    # Export PLY: the current Gaussians under the level selection (levels up to 1, background off).
    assert r["ply_counts"] == {"0": config.gaussians_at_level(0), "1": config.gaussians_at_level(1)}, r["ply_status"]
    recent = json.loads((tmp_path / "config" / "gsgan" / "recent.json").read_text())
    assert recent == [str(checkpoint.resolve())]

    assert not r["busy_when_idle"] and r["busy_after_input"], "the UI loop slows down only when idle"

    # With an engine whose frames take 0.5 s (the driver's SLOW_FRAME): ...
    # ... the yaw wraps: 7 radians of drag leave it, and the slider, inside -180..180 degrees;
    assert -math.pi <= r["yaw_after_long_drag"] <= math.pi
    assert r["yaw_widget_after_long_drag"] == pytest.approx(math.degrees(r["yaw_after_long_drag"]), abs=1e-3)
    assert -180 <= r["yaw_widget_after_long_drag"] <= 180
    # ... the UI loop never waits for a frame: it ran all through the drag and the animation;
    # (a loop that waited for one would take the whole 0.5 s; the margin is for a loaded machine)
    assert r["slowest_ui_loop"] < 0.45, r["slowest_ui_loop"]
    assert r["ui_loops_during_drag"] == 35 and r["frames_delivered_during_drag"] <= 6
    assert r["ui_loops_while_animating"] >= 30 and r["yaw_turned_while_animating"] > 0.5
    # ... while the camera moves it renders previews at a reduced resolution, and refines when it stops;
    full = r["full_resolution"]
    previews = [size for size, preview in r["drag_resolutions"] if preview]
    assert previews and all(size < full for size in previews), r["drag_resolutions"]
    assert r["drag_resolutions"][-1] == [full, False] and r["shown_after_drag"] == [full, False]
    assert r["stale_dropped"] > 0  # requests the camera overtook were never rendered
    # ... and the Performance panel counts frames delivered, not UI loops.
    assert "frames delivered:" in r["performance_text"] and "GUI FPS" not in r["performance_text"]
    delivered = float(r["performance_text"].split("frames delivered:")[1].split("/s")[0])
    assert delivered < 1 / 0.5 + 0.5, r["performance_text"]  # at most ~2 frames/s at 0.5 s each


def test_invert_panel_under_xvfb(tmp_path):
    """A photo of a head the model draws, inverted (PTI) in the window: the fit shows in the view while
    the UI keeps running, the result becomes latent B at the fitted camera, and it can be interpolated,
    truncated, viewed with or without the tuned generator, saved, opened again, and cancelled."""
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run is missing: run `bash scripts/setup.sh --xvfb` (bash scripts/test.sh does)")
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, random_generator("tiny"), dataset={"name": "unit", "resolution": 64})
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = tmp_path / "out"
    run = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x900x24", sys.executable, str(DRIVER), str(checkpoint), str(out),
         "--invert"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert run.returncode == 0, f"driver failed:\n{run.stdout}\n{run.stderr}"
    r = json.loads((out / "result.json").read_text())

    assert "cannot invert" in r["invert_missing_status"] and "missing.png" in r["invert_missing_status"]
    # While it ran: the UI looped, the view showed the fit (previews of every stage) with a caption.
    assert r["invert_ui_frames"] >= 10 and r["invert_overlay_frames"] >= 5, r
    assert r["invert_previews_shown"] >= 3 and r["invert_inset_shows_the_photo"], r
    assert r["invert_captions"] and all(c.startswith("fitting photo.png") for c in r["invert_captions"]), r
    assert "inverted" in r["invert_status"] and "latent B" in r["invert_status"], r["invert_status"]
    name = r["invert_latent"][0]
    assert name == "inverted photo" and r["invert_latent"][1:] == [1.0, 1.0]
    assert not r["invert_overlay_after"] and r["invert_view_matches_engine"]
    # It joined the Latent panel's B choices, at the camera of the fit, with the tuned generator in use.
    assert r["invert_b_items"] == ["seed B", name] and r["invert_b_widget"] == name
    assert r["invert_camera_is_fit"]
    assert r["invert_tuned_in_use"] and r["invert_tuned_checkbox"] == [True, True]
    # The fit is the photo's head: closer to it than seed A, and tuning helped.
    assert r["invert_fit_psnr"] > r["invert_seed_a_psnr"] + 1.0, r
    assert r["invert_fit_psnr"] >= r["invert_untuned_psnr"] - 0.1, r
    assert r["invert_untuned_is_base"] and r["invert_retuned"]
    # Interpolating from seed A to it and truncating it change the view.
    assert r["invert_halfway_change"] > 0.5 and r["invert_truncation_change"] > 0.5, r
    # Saved and opened again: the same latent, the same name.
    assert "could not save" in r["invert_save_bad_status"] and "inverted.png" in r["invert_save_bad_status"]
    assert r["invert_saved"] and "wrote" in r["invert_save_status"]  # into a folder it made
    assert r["invert_reopened_latent"] == name and "opened" in r["invert_open_status"]
    assert "could not open" in r["invert_open_bad_status"] and "photo.png" in r["invert_open_bad_status"]
    # Cancelled: said so, nothing added, the view is the state's again.
    assert "cancelled" in r["invert_cancel_status"], r["invert_cancel_status"]
    assert not r["invert_overlay_after_cancel"] and r["invert_latents_after_cancel"] == [name]


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
