"""Render panel: resolution, mode (RGB, depth, alpha, level colours) and background colour.
Writes `state.render`."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from gsgan_core.view.state import RENDER_MODES

from .base import PANEL_WIDTH, Panel

RESOLUTIONS = (64, 128, 256, 512, 1024)


def _colour_from_widget(v) -> tuple[float, ...]:  # Dear PyGui hands out 0-255 or 0-1, depending on the call
    return tuple(float(c) / (255.0 if max(v[:3]) > 1.0 else 1.0) for c in v[:3])


class RenderPanel(Panel):
    title, part = "Render", "render"
    default_open = False

    def build_widgets(self) -> None:
        self.field(dpg.add_combo, "resolution", items=[str(r) for r in RESOLUTIONS], label="resolution",
                   to_widget=str, from_widget=int, width=120)
        self.field(dpg.add_combo, "mode", items=list(RENDER_MODES), label="mode", width=120)
        self.field(dpg.add_color_edit, "background", label="background", no_alpha=True, sync=False,
                   to_widget=lambda v: [int(round(c * 255)) for c in v] + [255], from_widget=_colour_from_widget)
        dpg.add_text("", tag="render.backend", wrap=PANEL_WIDTH - 20)

    def refresh(self) -> None:
        dpg.set_value("render.backend", f"backend: {self.app.engine.backend_name()}")
