"""The view: the engine's frame as a raw texture, the caption under it, and the mouse on it.

Left-drag orbits, right/middle-drag pans, the wheel zooms (all through the Camera panel), a left
click picks a Gaussian (through the Levels panel). Positions are view (screen) pixels.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import dearpygui.dearpygui as dpg
import numpy as np

from gsgan_core.errors import GsganError
from gsgan_core.view import viewer_camera

from .panels import CameraPanel, LevelsPanel
from .texture import new_rgba_buffer, to_rgba

if TYPE_CHECKING:
    from .window import ExplorerApp

VIEW_SIZE = 512  # on-screen size of the view; the texture (render resolution) is scaled to it
CLICK_SLOP = 3.0  # a press and release closer than this (screen pixels) is a click, not a drag


class Viewport:
    def __init__(self, app: "ExplorerApp"):
        self.app = app
        self.upload_ms = 0.0  # CPU time of the last texture upload
        self._texture: str | int | None = None
        self._texture_size = 0
        self._rgba: np.ndarray | None = None
        self._frame_key = None  # the engine's key of the frame on screen
        self.button: int | None = None  # the mouse button held down on the view
        self._start = self._last = (0.0, 0.0)
        self._dragged = False

    # ------------------------------------------------------------------ widgets
    def build(self) -> None:
        with dpg.texture_registry(tag="textures"):
            pass
        self._ensure_texture(int(self.app.state.render.resolution))
        dpg.add_image(self._texture, width=VIEW_SIZE, height=VIEW_SIZE, tag="view")
        dpg.add_text("", tag="view.caption", wrap=VIEW_SIZE)

    def build_handlers(self) -> None:
        with dpg.handler_registry(tag="mouse"):
            dpg.add_mouse_click_handler(callback=self._on_click)
            dpg.add_mouse_move_handler(callback=self._on_move)
            dpg.add_mouse_release_handler(callback=self._on_release)
            dpg.add_mouse_wheel_handler(callback=self._on_wheel)

    def _ensure_texture(self, size: int) -> None:
        if size == self._texture_size:
            return
        self._rgba = new_rgba_buffer(size, size)
        old = self._texture
        self._texture = dpg.add_raw_texture(size, size, self._rgba.reshape(-1), format=dpg.mvFormat_Float_rgba,
                                            parent="textures")
        self._texture_size = size
        if dpg.does_item_exist("view"):
            dpg.configure_item("view", texture_tag=self._texture)
        if old is not None:
            dpg.delete_item(old)
        self._frame_key = None

    # ------------------------------------------------------------------ per frame
    def draw(self) -> None:
        """Asks the engine for the current state's frame and uploads it if it is a new one."""
        app = self.app
        if not app.engine.loaded:
            return
        try:
            frame = app.engine.frame(app.state)
        except Exception as err:  # any rendering error: say so, keep the app and the last frame
            message = f"render error: {type(err).__name__}: {err}"
            if app.status != message:
                app.set_status(message)
            return
        if frame.key != self._frame_key:
            start = time.perf_counter()
            self._ensure_texture(frame.image.shape[0])
            to_rgba(frame.image, self._rgba)  # the raw texture reads this buffer directly
            self.upload_ms = (time.perf_counter() - start) * 1e3
            self._frame_key = frame.key

    def caption(self) -> None:
        """Describes the frame on screen, so it follows every frame (unlike the panels' readouts)."""
        latent, camera, render = self.app.state.latent, self.app.state.camera, self.app.state.render
        dpg.set_value("view.caption", f"seed {latent.seed_a}"
                      + (f" -> {latent.seed_b} @ {latent.interp:.2f}" if latent.interp else "")
                      + f"  psi {latent.psi:.2f}  yaw {math.degrees(camera.yaw):.0f} pitch {math.degrees(camera.pitch):.0f}"
                      + f"  {render.resolution}px {render.mode}")

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
        """A click at view pixel (x, y): select the coarse ancestor of the Gaussian seen there."""
        app = self.app
        if not app.engine.loaded:
            return
        scale = app.state.render.resolution / VIEW_SIZE
        try:
            picked = app.engine.pick(app.state, x * scale, y * scale)
        except GsganError as err:
            app.set_status(f"pick failed: {err}")
            return
        app.panel(LevelsPanel).select(picked)

    # ------------------------------------------------------------------ Dear PyGui mouse handlers
    def rect(self) -> tuple[float, float, float, float]:
        x0, y0 = dpg.get_item_rect_min("view")
        return x0, y0, x0 + VIEW_SIZE, y0 + VIEW_SIZE

    def _mouse(self) -> tuple[float, float, bool]:  # view pixels, and whether inside the view
        mx, my = dpg.get_mouse_pos(local=False)
        x0, y0, x1, y1 = self.rect()
        return mx - x0, my - y0, x0 <= mx < x1 and y0 <= my < y1

    def _on_click(self, sender, button) -> None:
        x, y, inside = self._mouse()
        if inside and dpg.is_item_hovered("view"):
            self.press(button, x, y)

    def _on_move(self, sender, data) -> None:
        if self.button is not None:
            x, y, _ = self._mouse()
            self.move(x, y)

    def _on_release(self, sender, button) -> None:
        x, y, _ = self._mouse()
        self.release(button, x, y)

    def _on_wheel(self, sender, steps) -> None:
        if dpg.is_item_hovered("view"):
            self.wheel(steps)
