"""The explorer's window (Dear PyGui): the view on the left, the panels on the right, a status
bar below. The panels write the state; once per GUI frame `step()` asks the engine for the
frame of the current state, and the engine recomputes only what changed (StyleGAN3 visualizer
style). Errors while loading or rendering go to the status bar; the last good model stays.
"""

from __future__ import annotations

import time
from typing import TypeVar

import dearpygui.dearpygui as dpg

from gsgan_core.view.engine import Engine
from gsgan_core.view.state import ExplorerState

from .panels import PANEL_WIDTH, PANELS, CheckpointPanel, Panel
from .viewport import VIEW_SIZE, Viewport

READOUT_EVERY = 5  # frames between refreshes of the panels' readouts
P = TypeVar("P", bound=Panel)


class ExplorerApp:
    def __init__(self, engine: Engine, state: ExplorerState | None = None, status: str = ""):
        self.engine = engine
        self.state = state or ExplorerState()
        self.status = status
        self.viewport = Viewport(self)
        self.panels: list[Panel] = [panel(self) for panel in PANELS]
        self.frames_drawn = 0
        self._last_time = time.perf_counter()

    def panel(self, kind: type[P]) -> P:
        return next(p for p in self.panels if isinstance(p, kind))

    def build(self, width: int = VIEW_SIZE + PANEL_WIDTH + 40, height: int = 780) -> None:
        dpg.create_context()
        with dpg.window(tag="main", label="gsgan explorer"):
            with dpg.group(horizontal=True):
                with dpg.group():
                    self.viewport.build()
                with dpg.child_window(width=PANEL_WIDTH, height=height - 90, tag="panels"):
                    for panel in self.panels:
                        panel.build()
            dpg.add_separator()
            dpg.add_text(self.status, tag="status", wrap=width - 30)
        for panel in self.panels:
            panel.build_popups()
        self.viewport.build_handlers()
        dpg.create_viewport(title="gsgan explorer", width=width, height=height)
        dpg.setup_dearpygui()
        dpg.show_viewport()
        dpg.set_primary_window("main", True)
        for panel in self.panels:
            panel.fit_model()

    def set_status(self, text: str) -> None:
        self.status = text
        if dpg.does_item_exist("status"):
            dpg.set_value("status", text)

    def load(self, path: str) -> bool:
        """Opens a checkpoint as the Checkpoint panel's Load button does; False if it failed."""
        return self.panel(CheckpointPanel).load(path)

    def model_loaded(self) -> None:
        """Called by the Checkpoint panel after a successful load."""
        for panel in self.panels:
            panel.model_loaded()

    def step(self) -> None:
        """One GUI frame's work: animations, the engine's frame, widgets and readouts."""
        now = time.perf_counter()
        dt, self._last_time = min(now - self._last_time, 0.1), now
        for panel in self.panels:
            panel.tick(dt)
        self.viewport.draw()
        for panel in self.panels:
            panel.sync()
        self.viewport.caption()
        if self.frames_drawn % READOUT_EVERY == 0:
            for panel in self.panels:
                panel.refresh()
        self.frames_drawn += 1

    def run(self) -> None:
        while dpg.is_dearpygui_running():
            self.step()
            dpg.render_dearpygui_frame()
        self.close()

    def close(self) -> None:
        for panel in self.panels:
            panel.close()
        dpg.destroy_context()
