"""The explorer's window (Dear PyGui): the view on the left, the panels on the right, a status
bar below. The panels write the state; once per GUI frame `step()` hands the current state to the
render worker (`RenderWorker`, a thread of its own: the UI thread never waits for a frame) and shows
the newest frame it finished; the engine recomputes only what changed (StyleGAN3 visualizer style).
Errors while loading or rendering go to the status bar; the last good model and frame stay.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TypeVar

import dearpygui.dearpygui as dpg

from gsgan_core.view.engine import Engine, RenderWorker
from gsgan_core.view.state import ExplorerState

from .panels import PANEL_WIDTH, PANELS, CheckpointPanel, Panel
from .viewport import RATE_WINDOW, VIEW_SIZE, Viewport

READOUT_EVERY = 5  # frames between refreshes of the panels' readouts
MAX_UI_HZ = 60.0  # the UI loop sleeps to stay under this: it must not take the renderer's cores
IDLE_UI_HZ = 15.0  # ... and under this when nothing moves (drawing the window costs CPU: Xvfb draws in software)
IDLE_AFTER = 1.0  # seconds without input, animation or pending frames before the loop slows down
P = TypeVar("P", bound=Panel)


class ExplorerApp:
    def __init__(self, engine: Engine, state: ExplorerState | None = None, status: str = ""):
        self.engine = engine
        self.state = state or ExplorerState()
        self.status = status
        self.worker = RenderWorker(engine)
        self.viewport = Viewport(self)
        self.panels: list[Panel] = [panel(self) for panel in PANELS]
        self.frames_drawn = 0  # UI loops so far
        self._last_time = time.perf_counter()
        self._loops: deque[float] = deque()  # when the recent UI loops ran
        self.last_input = time.perf_counter()  # the mouse or keyboard last did something

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

    def animating(self) -> bool:
        """Whether a panel animates the view (auto-rotate, the latent ping-pong)."""
        return any(panel.animating() for panel in self.panels)

    def step(self) -> None:
        """One GUI frame's work: animations, the worker's frames and jobs, widgets and readouts.
        Nothing here waits for the generator or the rasterizer."""
        now = time.perf_counter()
        dt, self._last_time = min(now - self._last_time, 0.1), now
        self._loops.append(now)
        while now - self._loops[0] > RATE_WINDOW:
            self._loops.popleft()
        for panel in self.panels:
            panel.tick(dt)
        self.viewport.draw()
        for outcome in self.worker.finished_jobs():
            if outcome.done is not None:
                outcome.done(outcome)
        for panel in self.panels:
            panel.sync()
        self.viewport.caption()
        if self.frames_drawn % READOUT_EVERY == 0:
            for panel in self.panels:
                panel.refresh()
        self.frames_drawn += 1

    def loops_per_second(self) -> float:
        """How often the UI loop ran over the last RATE_WINDOW seconds (input stays live at this rate)."""
        loops = self._loops
        return (len(loops) - 1) / max(loops[-1] - loops[0], 1e-6) if len(loops) > 1 else 0.0

    def settled(self) -> bool:
        """Nothing left to do: the current state's frame is on screen, the worker is idle and no panel
        has work waiting (e.g. level shares to measure once the view is still)."""
        return self.viewport.settled() and not any(panel.working() for panel in self.panels)

    def touched(self) -> None:
        """Input arrived (the mouse and keyboard handlers call this): the loop runs at full rate."""
        self.last_input = time.perf_counter()

    def busy(self) -> bool:
        """Whether the loop should run at full rate: recent input, a moving view, work in flight."""
        if time.perf_counter() - self.last_input < IDLE_AFTER or self.viewport.moving:
            return True
        return not self.settled()

    def run(self) -> None:
        while dpg.is_dearpygui_running():
            start = time.perf_counter()
            self.step()
            dpg.render_dearpygui_frame()
            spare = 1.0 / (MAX_UI_HZ if self.busy() else IDLE_UI_HZ) - (time.perf_counter() - start)
            if spare > 0:
                time.sleep(spare)
        self.close()

    def close(self) -> None:
        for panel in self.panels:
            panel.close()
        self.worker.close()
        dpg.destroy_context()
