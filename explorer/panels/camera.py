"""Camera panel: the orbit camera's yaw, pitch, radius, pivot and field of view, reset to the
checkpoint's view, snap to the front, auto-rotate. Writes `state.camera`; the view's mouse
gestures come here too (`move`), and the Invert panel's fitted camera (`place`)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import dearpygui.dearpygui as dpg

from gsgan_core.view import viewer_camera
from gsgan_core.view.state import CameraState

from .base import SLIDER_WIDTH, Panel

AUTO_ROTATE_SPEED = 0.6  # radians of yaw per second


def wrapped_degrees(radians: float) -> float:
    """An angle in degrees in [-180, 180] (the yaw slider's range)."""
    return math.degrees(math.remainder(radians, 2 * math.pi))


def wrapped(camera: CameraState) -> CameraState:
    """The same view with its yaw in [-pi, pi]: orbits keep turning, the slider keeps its range."""
    yaw = math.remainder(camera.yaw, 2 * math.pi)
    return camera if yaw == camera.yaw else replace(camera, yaw=yaw)


class CameraPanel(Panel):
    title, part = "Camera", "camera"
    default_open = False

    def __init__(self, app):
        super().__init__(app)
        self.auto_rotate = False  # turn the yaw continuously

    def build_widgets(self) -> None:
        degrees: dict[str, Any] = dict(to_widget=math.degrees, from_widget=math.radians, width=SLIDER_WIDTH)
        dpg.add_text("left-drag orbit, right/middle-drag pan, wheel zoom")
        self.field(dpg.add_slider_float, "yaw", label="yaw (deg)", min_value=-180, max_value=180,
                   **{**degrees, "to_widget": wrapped_degrees})
        self.field(dpg.add_slider_float, "pitch", label="pitch (deg)", min_value=-89, max_value=89, **degrees)
        self.field(dpg.add_slider_float, "radius", label="radius", min_value=0.3, max_value=8.0, width=SLIDER_WIDTH)
        self.field(dpg.add_input_floatx, "pivot", label="pivot", size=3, width=SLIDER_WIDTH,
                   to_widget=lambda v: [float(x) for x in v], from_widget=lambda v: tuple(float(x) for x in v[:3]))
        self.field(dpg.add_slider_float, "fov_deg", label="fov (deg)", min_value=5, max_value=90, width=SLIDER_WIDTH)
        with dpg.group(horizontal=True):
            dpg.add_button(label="reset", tag="camera.reset", callback=self.reset)
            dpg.add_button(label="front", tag="camera.front", callback=lambda: self.move(viewer_camera.snap_front))
            self.toggle("camera.auto_rotate", "auto_rotate", "auto-rotate")

    def model_loaded(self) -> None:
        self.reset()

    def reset(self) -> None:
        """The checkpoint's own view."""
        self.place(self.app.engine.default_camera())

    def place(self, camera: CameraState) -> None:
        """Puts the camera at `camera`, as given (e.g. the camera an inversion fitted)."""
        self.app.state.camera = camera

    def move(self, gesture: Callable[..., CameraState], *args: Any) -> None:
        """Applies a gesture of `viewer_camera` (orbit, pan, zoom, snap_front) to the camera."""
        self.place(wrapped(gesture(self.value, *args)))

    def tick(self, dt: float) -> None:
        if self.auto_rotate:
            self.update(yaw=math.remainder(self.value.yaw + AUTO_ROTATE_SPEED * dt, 2 * math.pi))

    def animating(self) -> bool:
        return self.auto_rotate
