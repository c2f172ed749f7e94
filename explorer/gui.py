"""The explorer's window (Dear PyGui). Widgets only write the plain `ExplorerState`; `step()` asks
the engine for the frame of the current state once per GUI frame, and the engine recomputes only
what changed (StyleGAN3 visualizer style). Nothing here renders or generates by itself.

Layout: the view on the left (a raw texture streamed from the engine), the panels on the right
(Checkpoint, Latent, Levels, Camera, Render, Record, Performance), a status bar below. Errors
while loading or rendering go to the status bar; the last good model stays loaded.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dearpygui.dearpygui as dpg
import numpy as np

from gsgan_core.errors import GsganError
from gsgan_core.io.atomic import atomic_write_bytes
from gsgan_core.io.open import import_note
from gsgan_core.io.ply import write_ply

from . import viewer_camera
from .engine import Engine
from .recording import Cancelled, record, trajectory
from .state import LEVEL_MODES, RENDER_MODES, TRAJECTORIES, ExplorerState, ping_pong
from .texture import new_rgba_buffer, to_rgba
from .video import FrameWriter

VIEW_SIZE = 512  # on-screen size of the view; the texture (render resolution) is scaled to it
PANEL_WIDTH = 430
RESOLUTIONS = (64, 128, 256, 512, 1024)
CLICK_SLOP = 3.0  # a press and release closer than this (screen pixels) is a click, not a drag
AUTO_ROTATE_SPEED = 0.6  # radians of yaw per second
ANIMATE_SPEED = 0.5  # interpolation sweeps (0 -> 1) per second
MAX_RECENT = 8
NUM_DIRECTION_SLIDERS = 5


def recent_files_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gsgan" / "recent.json"


def read_recent() -> list[str]:
    try:
        data = json.loads(recent_files_path().read_text())
        return [str(p) for p in data if isinstance(p, str)][:MAX_RECENT]
    except (OSError, ValueError):
        return []  # no list yet, or an unreadable one: start a new one


# --------------------------------------------------------------------------- state paths
def get_path(state: ExplorerState, path: str) -> Any:
    """"latent.seed_a" -> state.latent.seed_a; "latent.take_b#2" -> state.latent.take_b[2]."""
    name, _, index = path.partition("#")
    obj = state
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj[int(index)] if index else obj


def set_path(state: ExplorerState, path: str, value: Any) -> None:
    name, _, index = path.partition("#")
    *parents, last = name.split(".")
    obj = state
    for part in parents:
        obj = getattr(obj, part)
    if index:
        items = list(getattr(obj, last))
        items[int(index)] = value
        value = tuple(items)
    setattr(obj, last, value)


@dataclass
class Binding:
    path: str
    to_widget: Callable[[Any], Any] = lambda v: v
    from_widget: Callable[[Any], Any] = lambda v: v
    sync: bool = True  # show changes the state got from elsewhere (mouse, animation, reset)


@dataclass
class RecordingJob:
    """A recording running in a thread; the UI polls `done` and `total`."""

    out: str
    total: int
    cancel: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    written: list = field(default_factory=list)
    error: str | None = None
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class ViewInput:
    """Mouse gestures on the view, in view (screen) pixels: left-drag orbits, right/middle-drag
    pans, the wheel zooms, a left click picks a Gaussian. Each gesture only edits the state."""

    def __init__(self, app: "ExplorerApp"):
        self.app = app
        self.button: int | None = None
        self.start = self.last = (0.0, 0.0)
        self.dragged = False

    def press(self, button: int, x: float, y: float) -> None:
        self.button, self.start, self.last, self.dragged = button, (x, y), (x, y), False

    def move(self, x: float, y: float) -> None:
        if self.button is None:
            return
        dx, dy = x - self.last[0], y - self.last[1]
        self.last = (x, y)
        if math.hypot(x - self.start[0], y - self.start[1]) > CLICK_SLOP:
            self.dragged = True
        camera = self.app.state.camera
        if self.button == 0:
            moved = viewer_camera.orbit(camera, dx, dy)
        else:
            moved = viewer_camera.pan(camera, dx, dy, VIEW_SIZE)
        moved.auto_rotate = camera.auto_rotate
        self.app.state.camera = moved

    def release(self, button: int, x: float, y: float) -> None:
        if self.button is None:
            return
        self.move(x, y)
        if button == 0 and not self.dragged:
            self.app.pick(x, y)
        self.button = None

    def wheel(self, steps: float) -> None:
        self.app.state.camera = viewer_camera.zoom(self.app.state.camera, steps)


class ExplorerApp:
    def __init__(self, engine: Engine, state: ExplorerState | None = None, status: str = ""):
        self.engine = engine
        self.state = state or ExplorerState()
        self.input = ViewInput(self)
        self.bindings: dict[str, Binding] = {}
        self._shown: dict[str, Any] = {}  # what each synced widget shows now
        self._texture_tag: str | int | None = None
        self._texture_size = 0
        self._rgba: np.ndarray | None = None
        self._frame_key = None
        self._last_time = time.perf_counter()
        self._animate_phase = 0.0
        self._status = status
        self.upload_ms = 0.0
        self.job: RecordingJob | None = None
        self.recent = read_recent()
        self._dynamic_count = (-1, -1)  # (mixable parts, directions) the Latent panel was built for
        self.frames_drawn = 0

    # ------------------------------------------------------------------ building
    def build(self, width: int = VIEW_SIZE + PANEL_WIDTH + 40, height: int = 780) -> None:
        dpg.create_context()
        with dpg.texture_registry(tag="textures"):
            pass
        self._ensure_texture(int(self.state.render.resolution))
        with dpg.window(tag="main", label="gsgan explorer"):
            with dpg.group(horizontal=True):
                with dpg.group():
                    dpg.add_image(self._texture_tag, width=VIEW_SIZE, height=VIEW_SIZE, tag="view")
                    dpg.add_text("", tag="view.caption", wrap=VIEW_SIZE)
                with dpg.child_window(width=PANEL_WIDTH, height=height - 90, tag="panels"):
                    self._checkpoint_panel()
                    self._latent_panel()
                    self._levels_panel()
                    self._camera_panel()
                    self._render_panel()
                    self._record_panel()
                    self._performance_panel()
            dpg.add_separator()
            dpg.add_text(self._status, tag="status", wrap=width - 30)
        with dpg.file_dialog(
            directory_selector=False, show=False, tag="file_dialog", width=640, height=420,
            callback=lambda s, a: self.load(a.get("file_path_name", "")) if a else None,
        ):
            dpg.add_file_extension(".safetensors", color=(120, 220, 120, 255))
            dpg.add_file_extension(".pkl", color=(220, 200, 120, 255))
        with dpg.handler_registry(tag="mouse"):
            dpg.add_mouse_click_handler(callback=self._on_mouse_click)
            dpg.add_mouse_move_handler(callback=self._on_mouse_move)
            dpg.add_mouse_release_handler(callback=self._on_mouse_release)
            dpg.add_mouse_wheel_handler(callback=self._on_mouse_wheel)
        dpg.create_viewport(title="gsgan explorer", width=width, height=height)
        dpg.setup_dearpygui()
        dpg.show_viewport()
        dpg.set_primary_window("main", True)
        self._rebuild_model_widgets()

    def _bind(self, add: Callable[..., Any], path: str, tag: str | None = None, *, to_widget=None,
              from_widget=None, sync: bool = True, **kwargs) -> str:
        tag = tag or f"w:{path}"
        binding = Binding(path, to_widget or (lambda v: v), from_widget or (lambda v: v), sync)
        self.bindings[tag] = binding
        value = binding.to_widget(get_path(self.state, path))
        add(tag=tag, default_value=value, callback=self._on_widget, user_data=path, **kwargs)
        self._shown[tag] = value
        return tag

    def _on_widget(self, sender, app_data, user_data) -> None:
        """Every bound widget's callback: write the value into the state, nothing else."""
        binding = self.bindings[sender]
        set_path(self.state, user_data, binding.from_widget(app_data))
        self._shown[sender] = app_data

    def _checkpoint_panel(self) -> None:
        with dpg.collapsing_header(label="Checkpoint", default_open=True):
            dpg.add_input_text(tag="ckpt.path", default_value=self.state.checkpoint or "", width=-1, hint="path/to/model.safetensors")
            with dpg.group(horizontal=True):
                dpg.add_button(label="Open...", callback=lambda: dpg.show_item("file_dialog"))
                dpg.add_button(label="Load", tag="ckpt.load", callback=lambda: self.load(dpg.get_value("ckpt.path")))
                dpg.add_combo(self.recent, tag="ckpt.recent", label="recent", width=200,
                              callback=lambda s, a: self.load(a))
            dpg.add_text("", tag="ckpt.info")

    def _latent_panel(self) -> None:
        with dpg.collapsing_header(label="Latent", default_open=True):
            for name in ("a", "b"):
                with dpg.group(horizontal=True):
                    self._bind(dpg.add_input_int, f"latent.seed_{name}", label=f"seed {name.upper()}", width=160,
                               min_value=0, min_clamped=True, max_value=2**31 - 1, max_clamped=True)
                    dpg.add_button(label="random", tag=f"latent.random_{name}",
                                   callback=lambda s, a, u: set_path(self.state, u, random.randrange(2**31)),
                                   user_data=f"latent.seed_{name}")
            self._bind(dpg.add_slider_float, "latent.interp", label="A -> B (W)", min_value=0.0, max_value=1.0, width=220)
            self._bind(dpg.add_checkbox, "latent.animate", label="animate (ping-pong)")
            self._bind(dpg.add_slider_float, "latent.psi", label="psi", min_value=0.0, max_value=1.0, width=220)
            self._bind(dpg.add_slider_int, "latent.cutoff", tag="w:latent.cutoff", label="cutoff (0 = all)",
                       min_value=0, max_value=1, width=220)
            dpg.add_text("per-level mixing: take w from B for")
            dpg.add_group(tag="latent.mixing", horizontal=True)
            dpg.add_text("principal directions of W (in std)")
            dpg.add_group(tag="latent.directions")

    def _levels_panel(self) -> None:
        with dpg.collapsing_header(label="Levels", default_open=True):
            self._bind(dpg.add_radio_button, "levels.mode", items=["all levels", "levels up to k", "only level k"],
                       to_widget=lambda v: ["all levels", "levels up to k", "only level k"][LEVEL_MODES.index(v)],
                       from_widget=lambda v: LEVEL_MODES[["all levels", "levels up to k", "only level k"].index(v)],
                       horizontal=True)
            self._bind(dpg.add_slider_int, "levels.level", label="k", min_value=0, max_value=1, width=220)
            with dpg.group(horizontal=True):
                self._bind(dpg.add_checkbox, "levels.color_by_level", label="colour by level")
                self._bind(dpg.add_checkbox, "levels.centres", label="centres as dots")
                self._bind(dpg.add_checkbox, "levels.background", label="background")
            self._bind(dpg.add_slider_float, "levels.scale", label="scale x", min_value=0.05, max_value=2.0, width=220)
            dpg.add_text("", tag="levels.counts", wrap=PANEL_WIDTH - 30)
            self._bind(dpg.add_checkbox, "levels.measure", label="measure each level's share of the view")
            dpg.add_text("", tag="levels.shares", wrap=PANEL_WIDTH - 30)
            with dpg.group(horizontal=True):
                dpg.add_text("click the view to select a coarse Gaussian", tag="levels.selection")
                dpg.add_button(label="clear", callback=lambda: set_path(self.state, "levels.selected", None))

    def _camera_panel(self) -> None:
        degrees = dict(to_widget=lambda v: math.degrees(v), from_widget=lambda v: math.radians(v))
        with dpg.collapsing_header(label="Camera", default_open=False):
            dpg.add_text("left-drag orbit, right/middle-drag pan, wheel zoom")
            self._bind(dpg.add_slider_float, "camera.yaw", label="yaw (deg)", min_value=-180, max_value=180, width=220,
                       **degrees)
            self._bind(dpg.add_slider_float, "camera.pitch", label="pitch (deg)", min_value=-89, max_value=89, width=220,
                       **degrees)
            self._bind(dpg.add_slider_float, "camera.radius", label="radius", min_value=0.3, max_value=8.0, width=220)
            self._bind(dpg.add_input_floatx, "camera.pivot", label="pivot", size=3, width=220,
                       to_widget=lambda v: [float(x) for x in v], from_widget=lambda v: tuple(float(x) for x in v[:3]))
            self._bind(dpg.add_slider_float, "camera.fov_deg", label="fov (deg)", min_value=5, max_value=90, width=220)
            with dpg.group(horizontal=True):
                dpg.add_button(label="reset", tag="camera.reset", callback=self.reset_camera)
                dpg.add_button(label="front", tag="camera.front",
                               callback=lambda: setattr(self.state, "camera", viewer_camera.snap_front(self.state.camera)))
                self._bind(dpg.add_checkbox, "camera.auto_rotate", label="auto-rotate")

    def _render_panel(self) -> None:
        with dpg.collapsing_header(label="Render", default_open=False):
            self._bind(dpg.add_combo, "render.resolution", items=[str(r) for r in RESOLUTIONS], label="resolution",
                       to_widget=str, from_widget=int, width=120)
            self._bind(dpg.add_combo, "render.mode", items=list(RENDER_MODES), label="mode", width=120)
            self._bind(dpg.add_color_edit, "render.background", label="background", no_alpha=True, sync=False,
                       to_widget=lambda v: [int(round(c * 255)) for c in v] + [255],
                       from_widget=lambda v: tuple(float(c) / (255.0 if max(v[:3]) > 1.0 else 1.0) for c in v[:3]))
            dpg.add_text("", tag="render.backend", wrap=PANEL_WIDTH - 20)

    def _record_panel(self) -> None:
        with dpg.collapsing_header(label="Record", default_open=False):
            self._bind(dpg.add_combo, "record.trajectory", items=list(TRAJECTORIES), label="trajectory", width=140)
            self._bind(dpg.add_input_int, "record.frames", label="frames", width=140, min_value=1, min_clamped=True)
            self._bind(dpg.add_input_int, "record.fps", label="fps", width=140, min_value=1, min_clamped=True)
            self._bind(dpg.add_combo, "record.resolution", items=[str(r) for r in RESOLUTIONS], label="resolution",
                       to_widget=str, from_widget=int, width=140)
            self._bind(dpg.add_slider_float, "record.pitch", label="turntable pitch (deg)", min_value=-60, max_value=60,
                       width=140, to_widget=math.degrees, from_widget=math.radians)
            self._bind(dpg.add_input_text, "record.out", label=".mp4/.gif/.png", width=240)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Record", tag="record.start", callback=self.start_recording)
                dpg.add_button(label="Cancel", tag="record.cancel", callback=self.cancel_recording)
                dpg.add_progress_bar(tag="record.progress", default_value=0.0, width=200)
            self._bind(dpg.add_input_text, "record.screenshot", label="screenshot", width=240)
            dpg.add_button(label="Screenshot (PNG)", tag="record.screenshot_button", callback=self.save_screenshot)
            self._bind(dpg.add_input_text, "record.ply", label="PLY", width=240)
            dpg.add_button(label="Export PLY (current Gaussians, level selection)", tag="record.ply_button",
                           callback=self.export_ply)

    def _performance_panel(self) -> None:
        with dpg.collapsing_header(label="Performance", default_open=False):
            dpg.add_text("", tag="perf.text")

    def _rebuild_model_widgets(self) -> None:
        """The parts of the Latent and Levels panels whose size depends on the model."""
        parts = self.engine.mixable_parts()
        directions = 0 if self.engine.directions is None else min(len(self.engine.directions), NUM_DIRECTION_SLIDERS)
        latent = self.state.latent
        latent.take_b = tuple(list(latent.take_b)[: len(parts)] + [False] * (len(parts) - len(latent.take_b)))
        latent.directions = tuple(list(latent.directions)[:directions] + [0.0] * (directions - len(latent.directions)))
        if self._dynamic_count != (len(parts), directions):
            self._dynamic_count = (len(parts), directions)
            for group in ("latent.mixing", "latent.directions"):
                for child in dpg.get_item_children(group, 1) or []:
                    self.bindings.pop(dpg.get_item_alias(child) or child, None)
                    dpg.delete_item(child)
            for i, name in enumerate(parts):
                self._bind(dpg.add_checkbox, f"latent.take_b#{i}", label=name.replace("level ", "L").replace("background", "bg"),
                           parent="latent.mixing")
            for i in range(directions):
                self._bind(dpg.add_slider_float, f"latent.directions#{i}", label=f"PC{i + 1}", min_value=-5.0,
                           max_value=5.0, width=220, parent="latent.directions")
        levels = max(self.engine.num_levels(), 1)
        dpg.configure_item("w:levels.level", max_value=levels - 1)
        self.state.levels.level = min(self.state.levels.level, levels - 1)
        num_ws = self.engine.generator.config.num_ws if self.engine.loaded else 1
        dpg.configure_item("w:latent.cutoff", max_value=num_ws)
        dpg.set_value("ckpt.info", self._describe())

    def _describe(self) -> str:
        facts = self.engine.describe()
        if not facts:
            return "no checkpoint loaded"
        per_level = ", ".join(f"L{l}: {n:,}" for l, n in facts["gaussians per level"].items())
        return (
            f"preset {facts['preset']}, {facts['resolution']} px, trained {facts['kimg']:g} kimg\n"
            f"dataset: {facts['dataset']}\nGaussians per level: {per_level}\n"
            f"background: {facts['background Gaussians']:,}"
        )

    # ------------------------------------------------------------------ actions
    def set_status(self, text: str) -> None:
        self._status = text
        if dpg.does_item_exist("status"):
            dpg.set_value("status", text)

    def load(self, path: str) -> bool:
        """Loads a checkpoint; on failure the status bar says why and the old model stays."""
        path = str(path).strip()
        if not path:
            self.set_status("no file given: type a path or use Open...")
            return False
        self.set_status(f"loading {path} ...")
        try:
            info = self.engine.load(path)
        except (GsganError, OSError) as err:
            self.set_status(f"could not load: {err}" + ("; the previous model stays loaded" if self.engine.loaded else ""))
            return False
        self.state.checkpoint = path
        self.state.camera = self.engine.default_camera()
        self.state.levels.selected = None
        dpg.set_value("ckpt.path", path)
        self._remember(path)
        self._rebuild_model_widgets()
        note = import_note(info)
        self.set_status(f"loaded {path} ({info.config.num_gaussians:,} Gaussians)" + (f"; {note}" if note else ""))
        return True

    def _remember(self, path: str) -> None:
        absolute = str(Path(path).resolve())
        self.recent = [absolute] + [p for p in self.recent if p != absolute][: MAX_RECENT - 1]
        dpg.configure_item("ckpt.recent", items=self.recent)
        try:
            target = recent_files_path()
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, json.dumps(self.recent, indent=1).encode())
        except OSError as err:  # a read-only home is no reason to stop exploring
            self.set_status(f"loaded {path} (could not save the recent-files list: {err})")

    def reset_camera(self) -> None:
        auto = self.state.camera.auto_rotate
        self.state.camera = self.engine.default_camera()
        self.state.camera.auto_rotate = auto

    def pick(self, x: float, y: float) -> None:
        """A click at view pixel (x, y): select the coarse ancestor of the Gaussian seen there."""
        if not self.engine.loaded:
            return
        scale = self.state.render.resolution / VIEW_SIZE
        try:
            picked = self.engine.pick(self.state, x * scale, y * scale)
        except GsganError as err:
            self.set_status(f"pick failed: {err}")
            return
        self.state.levels.selected = picked

    def start_recording(self) -> None:
        if self.job is not None and self.job.running:
            self.set_status("a recording is already running")
            return
        if not self.engine.loaded:
            self.set_status("load a checkpoint first")
            return
        snapshot = self.state.copy()
        settings = snapshot.record
        snapshot.render.resolution = int(settings.resolution)
        try:
            states = trajectory(snapshot, settings.trajectory, int(settings.frames), pitch=settings.pitch)
            FrameWriter(settings.out, settings.fps)  # checks the output now, in the UI, before the thread starts
        except GsganError as err:
            self.set_status(f"cannot record: {err}")
            return
        job = RecordingJob(out=settings.out, total=len(states))

        def run() -> None:
            try:
                job.written = record(self.engine, [[s] for s in states], settings.out, settings.fps,
                                     progress=lambda done, total: setattr(job, "done", done), cancel=job.cancel)
            except Cancelled as err:
                job.error = str(err)
            except Exception as err:  # shown in the status bar; the app keeps running
                job.error = f"recording failed: {type(err).__name__}: {err}"

        job.thread = threading.Thread(target=run, name="gsgan-recording", daemon=True)
        self.job = job
        job.thread.start()
        self.set_status(f"recording {job.total} frames to {job.out} ...")

    def cancel_recording(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel.set()

    def save_screenshot(self) -> None:
        try:
            with FrameWriter(self.state.record.screenshot, fps=1) as writer:
                writer.append(self.engine.frame(self.state).image)
            self.set_status(f"wrote {self.state.record.screenshot}")
        except GsganError as err:
            self.set_status(f"screenshot failed: {err}")

    def export_ply(self) -> None:
        out = self.state.record.ply
        try:
            from .video import check_output

            check_output(out, (".ply",))
            gaussians = self.engine.export_gaussians(self.state)
            write_ply(out, gaussians)
            self.set_status(f"wrote {out} ({gaussians.num_gaussians:,} Gaussians)")
        except (GsganError, OSError) as err:
            self.set_status(f"PLY export failed: {err}")

    # ------------------------------------------------------------------ mouse
    def view_rect(self) -> tuple[float, float, float, float]:
        x0, y0 = dpg.get_item_rect_min("view")
        return x0, y0, x0 + VIEW_SIZE, y0 + VIEW_SIZE

    def _mouse_in_view(self) -> tuple[float, float, bool]:
        mx, my = dpg.get_mouse_pos(local=False)
        x0, y0, x1, y1 = self.view_rect()
        return mx - x0, my - y0, x0 <= mx < x1 and y0 <= my < y1

    def _on_mouse_click(self, sender, button) -> None:
        x, y, inside = self._mouse_in_view()
        if inside and dpg.is_item_hovered("view"):
            self.input.press(button, x, y)

    def _on_mouse_move(self, sender, data) -> None:
        if self.input.button is not None:
            x, y, _ = self._mouse_in_view()
            self.input.move(x, y)

    def _on_mouse_release(self, sender, button) -> None:
        x, y, _ = self._mouse_in_view()
        self.input.release(button, x, y)

    def _on_mouse_wheel(self, sender, steps) -> None:
        if dpg.is_item_hovered("view"):
            self.input.wheel(steps)

    # ------------------------------------------------------------------ per-frame work
    def _ensure_texture(self, size: int) -> None:
        if size == self._texture_size:
            return
        self._rgba = new_rgba_buffer(size, size)
        old = self._texture_tag
        self._texture_tag = dpg.add_raw_texture(size, size, self._rgba.reshape(-1), format=dpg.mvFormat_Float_rgba,
                                                parent="textures")
        self._texture_size = size
        if dpg.does_item_exist("view"):
            dpg.configure_item("view", texture_tag=self._texture_tag)
        if old is not None:
            dpg.delete_item(old)
        self._frame_key = None

    def step(self) -> None:
        """One GUI frame's work: animations, the engine's frame, texture upload, readouts."""
        now = time.perf_counter()
        dt, self._last_time = min(now - self._last_time, 0.1), now
        state = self.state
        if state.camera.auto_rotate:
            state.camera.yaw = math.remainder(state.camera.yaw + AUTO_ROTATE_SPEED * dt, 2 * math.pi)
        if state.latent.animate:
            self._animate_phase += ANIMATE_SPEED * dt
            state.latent.interp = ping_pong(self._animate_phase)
        else:
            self._animate_phase = state.latent.interp
        self._poll_recording()
        if self.engine.loaded:
            try:
                frame = self.engine.frame(state)
                if frame.key != self._frame_key:
                    start = time.perf_counter()
                    self._ensure_texture(frame.image.shape[0])
                    to_rgba(frame.image, self._rgba)  # the raw texture reads this buffer directly
                    self.upload_ms = (time.perf_counter() - start) * 1e3
                    self._frame_key = frame.key
            except Exception as err:  # any rendering error: say so, keep the app and the last frame
                message = f"render error: {type(err).__name__}: {err}"
                if self._status != message:
                    self.set_status(message)
        self._sync_widgets()
        self._update_readouts()
        self.frames_drawn += 1

    def _poll_recording(self) -> None:
        job = self.job
        if job is None:
            return
        dpg.set_value("record.progress", job.done / max(job.total, 1))
        dpg.configure_item("record.progress", overlay=f"{job.done}/{job.total}")
        if not job.running and job.thread is not None:
            self.set_status(job.error or f"wrote {', '.join(str(p) for p in job.written[:1])} ({job.done} frames)")
            job.thread = None

    def _sync_widgets(self) -> None:
        """Shows state changes that did not come from the widget itself (mouse, animation, loads)."""
        for tag, binding in self.bindings.items():
            if not binding.sync:
                continue
            value = binding.to_widget(get_path(self.state, binding.path))
            shown = self._shown.get(tag)
            same = shown == value
            if not same and isinstance(value, float) and isinstance(shown, (int, float)):
                same = abs(shown - value) < 1e-6
            if not same:
                dpg.set_value(tag, value)
                self._shown[tag] = value

    def _update_readouts(self) -> None:
        state, engine, stats = self.state, self.engine, self.engine.stats
        # The caption describes the frame on screen, so it follows every frame (a screenshot taken
        # right after a change showed the old yaw); the rest is refreshed every 5th frame.
        cam = state.camera
        dpg.set_value("view.caption", f"seed {state.latent.seed_a}"
                      + (f" -> {state.latent.seed_b} @ {state.latent.interp:.2f}" if state.latent.interp else "")
                      + f"  psi {state.latent.psi:.2f}  yaw {math.degrees(cam.yaw):.0f} pitch {math.degrees(cam.pitch):.0f}"
                      + f"  {state.render.resolution}px {state.render.mode}")
        if self.frames_drawn % 5:
            return
        if engine.loaded:
            counts = engine.level_counts(state)
            dpg.set_value("levels.counts", "counts: " + ", ".join(
                f"{'bg' if k < 0 else f'L{k}'} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (kv[0] < 0, kv[0]))
            ) + f"; shown {stats.num_gaussians:,}")
            shares = engine.level_shares(state) if state.levels.measure else None
            dpg.set_value("levels.shares", "" if shares is None else "change without it: " + ", ".join(
                f"L{k} {v:.3f}" for k, v in sorted(shares.items()) if k >= 0))
            selected = state.levels.selected
            dpg.set_value("levels.selection", "click the view to select a coarse Gaussian" if selected is None
                          else f"selected level-0 Gaussian {selected} and its subtree")
        dpg.set_value("render.backend", f"backend: {engine.backend_name()}")
        memory = engine.gpu_memory_mb()
        dpg.set_value("perf.text", "\n".join([
            f"GUI FPS: {dpg.get_frame_rate():.1f}",
            f"generator: {stats.generator_ms:.1f} ms ({stats.generator_calls} runs)",
            f"rasterizer + copy: {stats.render_ms:.1f} ms ({stats.render_calls} frames)",
            f"texture upload (CPU): {self.upload_ms:.2f} ms",
            f"Gaussians drawn: {stats.num_gaussians:,}",
            f"device: {engine.device_name()}",
            f"GPU memory: {memory:.0f} MiB" if memory is not None else "GPU memory: (CPU)",
        ]))

    # ------------------------------------------------------------------ driving (tests, scripts)
    def widget_callback(self, tag: str, value: Any) -> None:
        """Sets a bound widget like a user would and runs its own callback."""
        dpg.set_value(tag, value)
        callback = dpg.get_item_callback(tag)
        callback(tag, value, dpg.get_item_user_data(tag))

    def press_button(self, tag: str) -> None:
        callback = dpg.get_item_callback(tag)
        try:
            callback(tag, None, dpg.get_item_user_data(tag))
        except TypeError:  # zero-argument lambdas
            callback()

    def framebuffer(self, frames: int = 10) -> np.ndarray:
        """The window's pixels ([H, W, 3] uint8), read back from the GL framebuffer.

        Goes through a PNG file: Dear PyGui 2.x calls an output_frame_buffer *callback* without
        holding the GIL on some set-ups (a fatal Python error), the file form is safe.
        """
        import tempfile

        import imageio.v3 as iio

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "framebuffer.png"
            dpg.output_frame_buffer(file=str(path))
            for _ in range(frames):
                self.step()
                dpg.render_dearpygui_frame()
                if path.exists() and path.stat().st_size > 0:
                    break
            return np.asarray(iio.imread(path))[..., :3]

    def run(self) -> None:
        while dpg.is_dearpygui_running():
            self.step()
            dpg.render_dearpygui_frame()
        self.close()

    def close(self) -> None:
        self.cancel_recording()
        if self.job is not None and self.job.thread is not None:
            self.job.thread.join(timeout=10)
        dpg.destroy_context()
