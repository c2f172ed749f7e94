"""Drives the real explorer window (run under Xvfb by test_explorer_gui.py; also makes docs/explorer.png).

Usage: python tests/gui_driver.py CKPT OUT_DIR [--screenshot PATH]

It starts the app empty (as with no demo checkpoint), opens CKPT through the Checkpoint panel's
own Load button, then uses the app's own widget callbacks and mouse handlers: change seed, drag
to orbit, pick a level, click a Gaussian, record a 4-frame video. Framebuffer screenshots of the
view are compared along the way. Frames come from the app's render worker, so after each change
the driver runs UI frames until the view has settled (`settle`). Last, with an engine whose frames
take half a second, it drags and animates and times the UI loop. Facts go to OUT_DIR/result.json
for the test to check.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import dearpygui.dearpygui as dpg
import imageio.v3 as iio
import numpy as np

from explorer.panels import InvertPanel, LevelsPanel, RecordPanel
from explorer.viewport import VIEW_SIZE
from explorer.window import ExplorerApp
from gsgan_core.view.engine import Engine
from gsgan_core.view.state import ExplorerState, RenderSettings
from gsgan_core.view.video import count_frames


# --------------------------------------------------------------------------- driving the window
def widget_callback(tag: str, value: Any) -> None:
    """Sets a widget like a user would and runs its own callback."""
    dpg.set_value(tag, value)
    callback = dpg.get_item_callback(tag)
    callback(tag, value, dpg.get_item_user_data(tag))


def press_button(tag: str) -> None:
    callback = dpg.get_item_callback(tag)
    try:
        callback(tag, None, dpg.get_item_user_data(tag))
    except TypeError:  # zero-argument callbacks
        callback()


def framebuffer(app: ExplorerApp, frames: int = 10) -> np.ndarray:
    """The window's pixels ([H, W, 3] uint8), read back from the GL framebuffer.

    Goes through a PNG file: Dear PyGui 2.x calls an output_frame_buffer *callback* without
    holding the GIL on some set-ups (a fatal Python error), the file form is safe.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "framebuffer.png"
        dpg.output_frame_buffer(file=str(path))
        for _ in range(frames):
            app.step()
            dpg.render_dearpygui_frame()
            if path.exists() and path.stat().st_size > 0:
                break
        return np.asarray(iio.imread(path))[..., :3]


def settle(app: ExplorerApp, timeout: float = 60.0) -> int:
    """Runs UI frames until the current state's full frame is on screen and the worker is idle
    (job callbacks done too); returns how many frames that took."""
    deadline = time.time() + timeout
    n = 0
    while time.time() < deadline:
        app.step()
        dpg.render_dearpygui_frame()
        n += 1
        if app.settled():
            app.step()  # callbacks of jobs that finished with the last frame
            dpg.render_dearpygui_frame()
            return n
        time.sleep(0.005)
    raise TimeoutError(f"the view did not settle in {timeout} s")


def edit(app: ExplorerApp, part: str, **changes: Any) -> None:
    """Changes the state from outside the panels, as an animation or a script would."""
    setattr(app.state, part, replace(getattr(app.state, part), **changes))


SLOW_FRAME = 0.5  # seconds every frame takes in the slow-engine part


def slow_frames(app: ExplorerApp, result: dict) -> None:
    """With frames that take SLOW_FRAME seconds: the yaw wraps on a long drag, the UI loop keeps
    running while frames render, the view renders previews while moving and refines once still."""
    frame = app.engine.frame

    def slow(state):
        time.sleep(SLOW_FRAME)
        return frame(state)

    app.engine.frame = slow
    full = app.state.render.resolution
    edit(app, "camera", yaw=0.123)  # a view not rendered yet
    settle(app)  # one slow full frame: the view now knows full frames are slow
    history = len(app.worker.history)
    dropped = app.worker.dropped
    loop_seconds = []

    def timed_frame() -> None:
        start = time.perf_counter()
        app.step()
        dpg.render_dearpygui_frame()
        loop_seconds.append(time.perf_counter() - start)

    # A long drag to the right: 700 view pixels, 7 radians of yaw, past -180 degrees.
    start = time.perf_counter()
    app.viewport.press(0, 10, 250)
    for x in range(30, 730, 20):
        app.viewport.move(x, 250)
        timed_frame()
        time.sleep(0.02)
    result["drag_seconds"] = time.perf_counter() - start
    result["ui_loops_during_drag"] = len(loop_seconds)
    result["frames_delivered_during_drag"] = len(app.worker.history) - history
    result["yaw_after_long_drag"] = app.state.camera.yaw
    result["yaw_widget_after_long_drag"] = dpg.get_value("camera.yaw")
    app.viewport.release(0, 730, 250)
    settle(app)
    drag = list(app.worker.history)[history:]
    result["drag_resolutions"] = [[size, preview] for size, preview, _ in drag]
    result["full_resolution"] = full
    result["shown_after_drag"] = [app.viewport.shown.state.render.resolution, app.viewport.shown.preview]
    result["stale_dropped"] = app.worker.dropped - dropped

    # Auto-rotate (an animation): the UI keeps looping, the yaw keeps turning.
    yaw = app.state.camera.yaw
    widget_callback("camera.auto_rotate", True)
    start = time.perf_counter()
    loops_before = len(loop_seconds)
    while time.perf_counter() - start < 1.5:
        timed_frame()
        time.sleep(0.01)
    widget_callback("camera.auto_rotate", False)
    result["ui_loops_while_animating"] = len(loop_seconds) - loops_before
    result["yaw_turned_while_animating"] = abs(app.state.camera.yaw - yaw)
    result["slowest_ui_loop"] = max(loop_seconds)
    result["performance_text"] = dpg.get_value("performance.text")
    settle(app)
    app.engine.frame = frame


def view_psnr(image: np.ndarray, target: np.ndarray) -> float:
    mse = float(np.mean((image.astype(np.float64) - target.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def inversion(app: ExplorerApp, out: Path, result: dict) -> None:
    """The Invert panel, as a user would use it: a bad path, then a photo of a head this model draws
    (seed 7, at the checkpoint's camera, with its label file) inverted with PTI while the view shows
    the fit; then the result in the Latent panel, the tuned generator, save and open, and a cancel."""
    from gsgan_core.cameras import cameras_to_labels
    from gsgan_core.invert import label_json
    from gsgan_core.view.viewer_camera import camera_from_orbit_pose

    engine = app.engine
    resolution = engine.generator.config.image_resolution
    pose = engine.info.camera
    photo = ExplorerState(latent=replace(app.state.latent, seed_a=7, psi=1.0, interp=0.0),
                          camera=camera_from_orbit_pose(pose), render=RenderSettings(resolution=resolution))
    target = engine.frame(photo).image
    iio.imwrite(out / "photo.png", target)
    (out / "photo.json").write_text(label_json(cameras_to_labels(*pose.cameras()), "photo.png"))
    base = engine.generator

    dpg.set_value("invert.image", str(out / "missing.png"))
    press_button("invert.start")
    result["invert_missing_status"] = dpg.get_value("status")

    dpg.set_value("invert.image", str(out / "photo.png"))
    dpg.set_value("invert.camera", str(out / "photo.json"))
    dpg.set_value("invert.mode", "pti")
    dpg.set_value("invert.steps", 8)
    panel = app.panel(InvertPanel)
    press_button("invert.start")
    ui_frames, overlay_frames, captions, previews, inset_ok = 0, 0, set(), set(), []
    deadline = time.time() + 180
    while panel.working() and time.time() < deadline:
        app.step()
        dpg.render_dearpygui_frame()
        ui_frames += 1
        if app.viewport.overlay is not None:
            overlay_frames += 1
            side = resolution // 3  # the photo, shrunk, in the top-right corner of the fit
            corner = app.viewport.overlay[1:side + 1, resolution - side - 1:resolution - 1]
            pick = np.arange(side) * resolution // side
            inset_ok.append(bool(np.array_equal(corner, target[pick][:, pick])))
            captions.add(dpg.get_value("view.caption").split(":")[0])
            previews.add(id(app.viewport.overlay))
        time.sleep(0.01)
    result["invert_ui_frames"] = ui_frames
    result["invert_overlay_frames"] = overlay_frames
    result["invert_previews_shown"] = len(previews)
    result["invert_captions"] = sorted(captions)
    result["invert_inset_shows_the_photo"] = bool(inset_ok) and all(inset_ok)
    settle(app)
    frames_ = 0
    while frames_ < 3:
        app.step()
        dpg.render_dearpygui_frame()
        frames_ += 1
    result["invert_status"] = dpg.get_value("status")
    latent = app.state.latent
    result["invert_latent"] = [latent.latent_b, latent.interp, latent.psi]
    result["invert_overlay_after"] = app.viewport.overlay is not None
    result["invert_b_items"] = dpg.get_item_configuration("latent.latent_b")["items"]
    result["invert_b_widget"] = dpg.get_value("latent.latent_b")
    result["invert_camera_is_fit"] = app.state.camera == camera_from_orbit_pose(panel.results[latent.latent_b].pose)
    result["invert_tuned_in_use"] = engine.generator is not base
    result["invert_tuned_checkbox"] = [dpg.is_item_shown("invert.use_tuned"), dpg.get_value("invert.use_tuned")]
    fitted = engine.frame(app.state).image
    iio.imwrite(out / "fitted.png", fitted)
    result["invert_fit_psnr"] = view_psnr(fitted, target)
    result["invert_view_matches_engine"] = bool(np.array_equal(app.viewport.shown.frame.image, fitted))
    seed_only = app.state.copy()
    seed_only.latent = replace(latent, interp=0.0)
    result["invert_seed_a_psnr"] = view_psnr(engine.frame(seed_only).image, target)

    # The Latent panel: halfway from seed A to it, then truncated.
    widget_callback("latent.interp", 0.5)
    settle(app)
    halfway = engine.frame(app.state).image
    widget_callback("latent.psi", 0.3)
    settle(app)
    truncated = engine.frame(app.state).image
    result["invert_halfway_change"] = float(np.abs(halfway.astype(np.int16) - fitted).mean())
    result["invert_truncation_change"] = float(np.abs(truncated.astype(np.int16) - halfway).mean())
    widget_callback("latent.psi", 1.0)
    widget_callback("latent.interp", 1.0)

    # Back to the checkpoint's generator, and to the tuned one.
    widget_callback("invert.use_tuned", False)
    result["invert_untuned_is_base"] = engine.generator is base
    settle(app)
    untuned = engine.frame(app.state).image
    result["invert_untuned_psnr"] = view_psnr(untuned, target)
    widget_callback("invert.use_tuned", True)
    result["invert_retuned"] = engine.generator is not base

    # Save, then open again: the same latent (same name: a name never changes its ws).
    dpg.set_value("invert.file", str(out / "inverted.png"))
    press_button("invert.save")
    result["invert_save_bad_status"] = dpg.get_value("status")
    saved = out / "new folder" / "inverted.safetensors"
    dpg.set_value("invert.file", str(saved))
    press_button("invert.save")
    result["invert_save_status"] = dpg.get_value("status")
    result["invert_saved"] = saved.exists()
    widget_callback("latent.latent_b", "seed B")
    press_button("invert.open")
    result["invert_open_status"] = dpg.get_value("status")
    result["invert_reopened_latent"] = app.state.latent.latent_b
    dpg.set_value("invert.file", str(out / "photo.png"))
    press_button("invert.open")
    result["invert_open_bad_status"] = dpg.get_value("status")

    # A long one, cancelled once it has started: nothing is added, the view comes back.
    dpg.set_value("invert.mode", "w+")
    dpg.set_value("invert.steps", 5000)
    press_button("invert.start")
    deadline = time.time() + 60
    while (panel.job.report is None) and time.time() < deadline:
        app.step()
        dpg.render_dearpygui_frame()
        time.sleep(0.01)
    press_button("invert.cancel")
    deadline = time.time() + 60
    while panel.working() and time.time() < deadline:
        app.step()
        dpg.render_dearpygui_frame()
        time.sleep(0.01)
    settle(app)
    app.step()
    dpg.render_dearpygui_frame()
    result["invert_cancel_status"] = dpg.get_value("status")
    result["invert_overlay_after_cancel"] = app.viewport.overlay is not None
    result["invert_latents_after_cancel"] = list(engine.latents)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--screenshot", default=None)
    p.add_argument("--invert", action="store_true", help="load, then drive the Invert panel only")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}

    state = ExplorerState(render=RenderSettings(resolution=64))
    app = ExplorerApp(Engine("cpu", direction_samples=256), state, status="no checkpoint (test)")
    app.build()

    def frames(n: int = 3) -> None:
        for _ in range(n):
            app.step()
            dpg.render_dearpygui_frame()

    def view_shot() -> np.ndarray:
        full = framebuffer(app)
        x0, y0, x1, y1 = (int(round(v)) for v in app.viewport.rect())
        return full[y0:y1, x0:x1]

    frames()
    result["empty_status"] = dpg.get_value("status")
    # A broken file first: a clear status message and still no crash.
    broken = out / "broken.safetensors"
    broken.write_bytes(b"garbage")
    dpg.set_value("checkpoint.path", str(broken))
    press_button("checkpoint.load")
    result["broken_status"] = dpg.get_value("status")
    dpg.set_value("checkpoint.path", args.checkpoint)
    press_button("checkpoint.load")
    result["loaded"] = app.engine.loaded
    result["info"] = dpg.get_value("checkpoint.preset") + "\n" + dpg.get_value("checkpoint.info")
    result["level_cells"] = {str(k): dpg.get_value(f"checkpoint.count#{k}") for k in range(-1, 8)
                             if dpg.does_item_exist(f"checkpoint.count#{k}")}
    result["default_camera_is_framed"] = app.state.camera == app.engine.default_camera()
    result["default_pivot"] = list(app.state.camera.pivot)
    settle(app)
    if args.invert:
        inversion(app, out, result)
        (out / "result.json").write_text(json.dumps(result, indent=1))
        app.close()
        return 0
    frames(2)
    # Every line of the Checkpoint panel's text fits the panel (nothing clipped).
    panel_width = dpg.get_item_rect_size("panels")[0]
    lines = dpg.get_value("checkpoint.info").split("\n")
    result["info_line_widths"] = [float(dpg.get_text_size(line)[0]) for line in lines if line]
    result["panel_width"] = float(panel_width)

    shots = {"start": view_shot()}
    result["view_shape"] = list(shots["start"].shape)

    widget_callback("latent.seed_a", 5)
    settle(app)
    shots["seed"] = view_shot()
    result["seed_state"] = app.state.latent.seed_a

    calls = app.engine.stats.generator_calls
    yaw0 = app.state.camera.yaw
    app.viewport.press(0, 200, 250)
    for x in range(210, 330, 20):
        app.viewport.move(x, 250)
        frames(1)
    app.viewport.release(0, 330, 250)
    settle(app)
    shots["orbit"] = view_shot()
    result["orbit_yaw_change"] = app.state.camera.yaw - yaw0
    result["orbit_generator_calls"] = app.engine.stats.generator_calls - calls
    result["yaw_widget_deg"] = dpg.get_value("camera.yaw")
    result["yaw_state_deg"] = float(np.degrees(app.state.camera.yaw))
    edit(app, "camera", yaw=0.5)  # the caption under the view follows the very next frame
    frames(1)
    result["caption_after_yaw_change"] = dpg.get_value("view.caption")

    radius = app.state.camera.radius
    app.viewport.wheel(2)
    result["zoom_ratio"] = app.state.camera.radius / radius

    widget_callback("levels.mode", "only level k")
    widget_callback("levels.level", 1)
    settle(app)
    shots["level"] = view_shot()
    config = app.engine.generator.config
    result["level_shown"] = app.engine.stats.num_gaussians
    result["level_expected"] = config.gaussians_at_level(1) + config.num_background_gaussians
    levels_panel = app.panel(LevelsPanel)
    widget_callback("levels.measure", True)
    frames(5)  # readouts refresh every 5 frames; the worker measures
    settle(app)
    frames(5)
    result["shares_text"] = levels_panel.shares_text()
    result["share_cells"] = [dpg.get_value(f"levels.share#{k}") for k in range(config.num_levels)]
    widget_callback("levels.measure", False)
    frames(5)
    result["shares_text_off"] = levels_panel.shares_text()
    result["share_cells_off"] = [dpg.get_value(f"levels.share#{k}") for k in range(config.num_levels)]

    # The legend shows while the view colours by level (the checkbox or the Render panel's mode).
    result["legend_shown_before"] = dpg.is_item_shown("levels.legend")
    widget_callback("levels.color_by_level", True)
    frames(2)
    result["legend_shown_checkbox"] = dpg.is_item_shown("levels.legend")
    result["legend_colours"] = {str(k): [int(c) for c in dpg.get_value(f"levels.legend#{k}")[:3]]
                                for k in list(range(config.num_levels)) + [-1]
                                if dpg.does_item_exist(f"levels.legend#{k}")}
    widget_callback("levels.color_by_level", False)
    widget_callback("render.mode", "levels")
    frames(2)
    result["legend_shown_mode"] = dpg.is_item_shown("levels.legend")
    widget_callback("render.mode", "rgb")
    frames(2)
    result["legend_shown_after"] = dpg.is_item_shown("levels.legend")

    widget_callback("levels.mode", "all levels")
    widget_callback("levels.background", False)
    settle(app)
    # Click on the object: a pixel of the current frame that is not the background.
    image = app.engine.frame(app.state).image
    background = np.round(np.asarray(app.state.render.background) * 255)
    ys, xs = np.nonzero(np.abs(image.astype(np.float32) - background).sum(-1) > 60)
    k = len(ys) // 2
    scale = VIEW_SIZE / image.shape[0]
    click = ((xs[k] + 0.5) * scale, (ys[k] + 0.5) * scale)
    app.viewport.press(0, *click)
    app.viewport.release(0, *click)
    settle(app)
    result["selected"] = app.state.levels.selected
    result["selected_level"] = None if app.state.levels.selected is None else int(
        app.engine.gaussians(app.state.latent).level[app.state.levels.selected])

    # A rendering error goes to the status bar and the app keeps running.
    edit(app, "render", mode="no-such-mode")
    settle(app)
    result["render_error_status"] = dpg.get_value("status")
    widget_callback("render.mode", "rgb")
    settle(app)

    video = out / "record.mp4"
    widget_callback("record.frames", 4)
    widget_callback("record.resolution", "64")
    widget_callback("record.out", str(video))
    press_button("record.start")
    deadline = time.time() + 90
    ui_frames_during = 0
    recorder = app.panel(RecordPanel)
    while recorder.job is not None and recorder.job.running and time.time() < deadline:
        frames(1)
        ui_frames_during += 1
    frames(2)
    result["record_status"] = dpg.get_value("status")
    result["record_frames"] = count_frames(video) if video.exists() else 0
    result["ui_frames_while_recording"] = ui_frames_during
    result["progress"] = dpg.get_value("record.progress")

    widget_callback("record.screenshot", str(out / "shot.png"))
    press_button("record.screenshot_button")
    settle(app)
    result["screenshot_shape"] = list(iio.imread(out / "shot.png").shape) if (out / "shot.png").exists() else None
    widget_callback("levels.mode", "levels up to k")
    widget_callback("levels.level", 1)
    widget_callback("record.ply", str(out / "head.ply"))
    press_button("record.ply_button")
    settle(app)
    result["ply_status"] = dpg.get_value("status")
    if (out / "head.ply").exists():
        from gsgan_core.io.ply import read_ply

        result["ply_counts"] = {str(k): v for k, v in read_ply(out / "head.ply").count_per_level().items()}

    for name, shot in shots.items():
        iio.imwrite(out / f"view_{name}.png", shot)
    result["view_std"] = {name: float(shot.astype(np.float32).std()) for name, shot in shots.items()}
    names = list(shots)
    result["view_change"] = {
        f"{a}->{b}": float(np.abs(shots[a].astype(np.int16) - shots[b]).mean()) for a, b in zip(names, names[1:])
    }
    if args.screenshot:
        # A readable picture for the README: the head at a three-quarter view, every level shown.
        press_button("camera.reset")
        edit(app, "camera", yaw=0.5)
        widget_callback("render.resolution", "256")
        widget_callback("levels.mode", "all levels")
        widget_callback("levels.background", True)
        press_button("levels.clear")
        settle(app)
        frames(3)
        iio.imwrite(args.screenshot, framebuffer(app))
    else:
        # Idle (settled, no input for a while) the loop slows down; input brings it back at once.
        settle(app)
        app.last_input = time.perf_counter() - 10
        result["busy_when_idle"] = app.busy()
        app.touched()
        result["busy_after_input"] = app.busy()
        slow_frames(app, result)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
