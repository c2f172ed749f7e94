"""The view: the latest frame as a raw texture, the caption under it, and the mouse on it.

Frames come from the app's `RenderWorker` (a thread of its own), never from the UI thread: each GUI
frame `draw()` picks up a finished frame if there is one and asks for the current state's frame if
the one on screen is not it. While the view moves (a drag, the wheel, auto-rotate, an animation) and
full-resolution frames are slow, it asks for a reduced resolution (`preview_resolution`) and, once
the view has been still for `SETTLE_SECONDS`, for the full one: as splat viewers do.

Left-drag orbits, right/middle-drag pans, the wheel zooms (all through the Camera panel), a left
click picks a Gaussian (through the Levels panel, in the worker). Positions are view (screen) pixels.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

import dearpygui.dearpygui as dpg
import numpy as np

from gsgan_core.errors import GsganError
from gsgan_core.view import viewer_camera
from gsgan_core.view.engine import FrameResult
from gsgan_core.view.state import ExplorerState

from .panels import CameraPanel, LevelsPanel
from .panels.camera import wrapped_degrees
from .texture import new_rgba_buffer, to_rgba

if TYPE_CHECKING:
    from .window import ExplorerApp

VIEW_SIZE = 512  # on-screen size of the view; the texture (render resolution) is scaled to it
CLICK_SLOP = 3.0  # a press and release closer than this (screen pixels) is a click, not a drag
SETTLE_SECONDS = 0.15  # the view counts as moving until this long after its camera last changed
PREVIEW_ABOVE_MS = 45.0  # full-resolution frames slower than this get previews while the view moves
MIN_PREVIEW = 32  # smallest preview resolution (pixels)
RATE_WINDOW = 2.0  # seconds over which "frames delivered per second" is counted


def preview_resolution(full: int, full_frame_ms: float) -> int:
    """The resolution to render at while the view moves: `full` if full frames are quick enough,
    else a half (a quarter if they take over 4x the budget), never below MIN_PREVIEW."""
    if full_frame_ms <= PREVIEW_ABOVE_MS:
        return full
    factor = 2 if full_frame_ms <= 4 * PREVIEW_ABOVE_MS else 4
    return min(full, max(MIN_PREVIEW, full // factor))


class Viewport:
    def __init__(self, app: "ExplorerApp"):
        self.app = app
        self.upload_ms = 0.0  # CPU time of the last texture upload
        self._textures: dict[int, tuple[int | str, np.ndarray]] = {}  # size -> (texture, its RGBA buffer)
        self._texture_size = 0
        self.shown: FrameResult | None = None  # the frame on screen
        self._wanted = None  # key of the frame last asked for
        self._failed = None  # key of a frame that failed (not asked for again until the state changes)
        self.full_frame_ms = 0.0  # time of the last full-resolution frame a camera move cost (no generator)
        self._camera = None
        self._camera_moved = -math.inf  # time.perf_counter() of the last camera change
        self._delivered: deque[float] = deque()  # when each of the recent frames arrived
        self.overlay: np.ndarray | None = None  # an image a panel shows instead of frames (a fit in progress)
        self._overlay_note = ""  # ... and the caption under it
        self._overlay_new = False
        self.button: int | None = None  # the mouse button held down on the view
        self._start = self._last = (0.0, 0.0)
        self._dragged = False

    # ------------------------------------------------------------------ widgets
    def build(self) -> None:
        with dpg.texture_registry(tag="textures"):
            pass
        dpg.add_image(self._texture(int(self.app.state.render.resolution)), width=VIEW_SIZE, height=VIEW_SIZE,
                      tag="view")
        dpg.add_text("", tag="view.caption", wrap=VIEW_SIZE)

    def build_handlers(self) -> None:
        with dpg.handler_registry(tag="mouse"):
            dpg.add_mouse_click_handler(callback=self._on_click)
            dpg.add_mouse_move_handler(callback=self._on_move)
            dpg.add_mouse_release_handler(callback=self._on_release)
            dpg.add_mouse_wheel_handler(callback=self._on_wheel)
            dpg.add_key_press_handler(callback=lambda *_: self.app.touched())

    def _texture(self, size: int) -> int | str:
        """The raw texture of `size` pixels (one per size: a preview does not replace the full one)."""
        if size not in self._textures:
            buffer = new_rgba_buffer(size, size)
            texture = dpg.add_raw_texture(size, size, buffer.reshape(-1), format=dpg.mvFormat_Float_rgba,
                                          parent="textures")
            self._textures[size] = (texture, buffer)
        return self._textures[size][0]

    def _show(self, image: np.ndarray) -> None:
        start = time.perf_counter()
        size = image.shape[0]
        texture = self._texture(size)
        to_rgba(image, self._textures[size][1])  # the raw texture reads this buffer directly
        if size != self._texture_size:
            dpg.configure_item("view", texture_tag=texture)
            self._texture_size = size
        self.upload_ms = (time.perf_counter() - start) * 1e3

    def show_overlay(self, image: np.ndarray, note: str) -> None:
        """Shows `image` ([R, R, 3] uint8) instead of frames, until `clear_overlay`; no frames are asked
        for meanwhile (the work that makes the overlay gets the machine)."""
        if image is not self.overlay:
            self.overlay, self._overlay_new = image, True
        self._overlay_note = note

    def clear_overlay(self) -> None:
        if self.overlay is None:
            return
        self.overlay, self._overlay_note = None, ""
        if self.shown is not None and self.shown.frame is not None:
            self._show(self.shown.frame.image)

    # ------------------------------------------------------------------ per frame
    @property
    def moving(self) -> bool:
        """Whether the view is being moved: a drag, the wheel, auto-rotate or an animation."""
        recent = time.perf_counter() - self._camera_moved < SETTLE_SECONDS
        return recent or (self.button is not None and self._dragged) or self.app.animating()

    def target(self) -> tuple[ExplorerState, bool]:
        """The state to ask the worker for now, and whether it is a reduced-resolution preview."""
        state = self.app.state
        full = int(state.render.resolution)
        if self.moving:
            size = preview_resolution(full, self.full_frame_ms)
            if size < full:
                preview = state.copy()
                preview.render = replace(state.render, resolution=size)
                return preview, True
        return state, False

    def draw(self) -> None:
        """Shows a frame the worker finished, and asks for the current state's if it is not on screen."""
        app = self.app
        worker = app.worker
        result = worker.poll()
        if result is not None:
            self._take(result)
        if self.overlay is not None:
            if self._overlay_new:
                self._show(self.overlay)
                self._overlay_new = False
            return
        if not app.engine.loaded:
            return
        if app.state.camera != self._camera:
            self._camera, self._camera_moved = app.state.camera, time.perf_counter()
        state, preview = self.target()
        try:
            key = app.engine.frame_key(state)
        except Exception:  # e.g. a generator swapped mid-call; ask again next frame
            return
        shown = self.shown.key if self.shown is not None else None
        if key not in (shown, self._failed, self._wanted):
            self._wanted = worker.request(state, preview)

    def _take(self, result: FrameResult) -> None:
        app = self.app
        now = time.perf_counter()
        self._delivered.append(now)
        if result.error is not None:
            self._failed = result.key
            message = f"render error: {result.error}"
            if app.status != message:
                app.set_status(message)
            return
        if app.status.startswith("render error"):
            app.set_status("")
        if not result.preview and result.render_ms is not None:  # what a camera move costs: no generator
            self.full_frame_ms = result.render_ms if result.generator_ran else result.seconds * 1e3
        if self.overlay is None:
            self._show(result.frame.image)
        self.shown = result

    def frames_per_second(self) -> float:
        """Frames delivered by the worker per second over the last RATE_WINDOW seconds (not UI loops)."""
        now = time.perf_counter()
        while self._delivered and now - self._delivered[0] > RATE_WINDOW:
            self._delivered.popleft()
        if len(self._delivered) < 2:
            return 0.0 if not self._delivered or now - self._delivered[-1] > RATE_WINDOW else 1.0 / RATE_WINDOW
        return (len(self._delivered) - 1) / max(self._delivered[-1] - self._delivered[0], 1e-6)

    def settled(self) -> bool:
        """The frame on screen is the current state's at full resolution (or it failed), nothing queued."""
        if not self.app.engine.loaded:
            return True
        key = self.app.engine.frame_key(self.app.state)
        on_screen = self.shown is not None and self.shown.key == key
        return (on_screen or key == self._failed) and self.app.worker.idle

    def caption(self) -> None:
        """Describes the frame asked for, so it follows every frame (unlike the panels' readouts)."""
        if self.overlay is not None:
            dpg.set_value("view.caption", self._overlay_note)
            return
        latent, camera, render = self.app.state.latent, self.app.state.camera, self.app.state.render
        shown = self.shown
        note = ""
        if shown is not None and shown.preview and self.app.engine.loaded:
            note = f"  (preview {shown.state.render.resolution}px)"
        elif self.app.worker.pending() is not None:
            note = "  (rendering...)"
        b = latent.latent_b or str(latent.seed_b)
        dpg.set_value("view.caption", f"seed {latent.seed_a}"
                      + (f" -> {b} @ {latent.interp:.2f}" if latent.interp else "")
                      + f"  psi {latent.psi:.2f}  yaw {wrapped_degrees(camera.yaw):.0f} pitch {math.degrees(camera.pitch):.0f}"
                      + f"  {render.resolution}px {render.mode}" + note)

    # ------------------------------------------------------------------ gestures (view pixels)
    def press(self, button: int, x: float, y: float) -> None:
        self.button, self._start, self._last, self._dragged = button, (x, y), (x, y), False

    def move(self, x: float, y: float) -> None:
        if self.button is None:
            return
        dx, dy = x - self._last[0], y - self._last[1]
        self._last = (x, y)
        if math.hypot(x - self._start[0], y - self._start[1]) > CLICK_SLOP:
            self._dragged = True
        camera = self.app.panel(CameraPanel)
        if self.button == 0:
            camera.move(viewer_camera.orbit, dx, dy)
        else:
            camera.move(viewer_camera.pan, dx, dy, VIEW_SIZE)

    def release(self, button: int, x: float, y: float) -> None:
        if self.button is None:
            return
        self.move(x, y)
        if button == 0 and not self._dragged:
            self.pick(x, y)
        self.button = None

    def wheel(self, steps: float) -> None:
        self.app.panel(CameraPanel).move(viewer_camera.zoom, steps)

    def pick(self, x: float, y: float) -> None:
        """A click at view pixel (x, y): select the coarse ancestor of the Gaussian seen there (the
        worker finds it; the selection changes when it has)."""
        app = self.app
        if not app.engine.loaded:
            return
        state = app.state.copy()
        scale = state.render.resolution / VIEW_SIZE

        def done(outcome) -> None:
            if isinstance(outcome.error, GsganError):
                app.set_status(f"pick failed: {outcome.error}")
            elif outcome.error is not None:
                app.set_status(f"pick failed: {type(outcome.error).__name__}: {outcome.error}")
            else:
                app.panel(LevelsPanel).select(outcome.value)

        app.worker.submit(lambda engine: engine.pick(state, x * scale, y * scale), done)

    # ------------------------------------------------------------------ Dear PyGui mouse handlers
    def rect(self) -> tuple[float, float, float, float]:
        x0, y0 = dpg.get_item_rect_min("view")
        return x0, y0, x0 + VIEW_SIZE, y0 + VIEW_SIZE

    def _mouse(self) -> tuple[float, float, bool]:  # view pixels, and whether inside the view
        mx, my = dpg.get_mouse_pos(local=False)
        x0, y0, x1, y1 = self.rect()
        return mx - x0, my - y0, x0 <= mx < x1 and y0 <= my < y1

    def _on_click(self, sender, button) -> None:
        self.app.touched()
        x, y, inside = self._mouse()
        if inside and dpg.is_item_hovered("view"):
            self.press(button, x, y)

    def _on_move(self, sender, data) -> None:
        self.app.touched()
        if self.button is not None:
            x, y, _ = self._mouse()
            self.move(x, y)

    def _on_release(self, sender, button) -> None:
        self.app.touched()
        x, y, _ = self._mouse()
        self.release(button, x, y)

    def _on_wheel(self, sender, steps) -> None:
        self.app.touched()
        if dpg.is_item_hovered("view"):
            self.wheel(steps)
