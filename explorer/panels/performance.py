"""Performance panel: frames delivered per second, the last frame's time, the generator and the
rasterizer (with the backend that drew the frame), the UI loop, device and memory. Reads only.

"frames/s" counts frames the render worker delivered, not UI loops: the UI loop keeps running (and
the window answering) while a frame renders, so its rate says nothing about rendering.
"""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from .base import Panel


class PerformancePanel(Panel):
    title = "Performance"
    default_open = False

    def build_widgets(self) -> None:
        dpg.add_text("", tag="performance.text")

    def lines(self) -> list[str]:
        app = self.app
        engine, stats, view, worker = app.engine, app.engine.stats, app.viewport, app.worker
        shown = view.shown
        last = "last frame: -"
        if shown is not None:
            size = shown.state.render.resolution
            last = (f"last frame: {shown.seconds * 1e3:.0f} ms at {size} px"
                    + (" (preview)" if shown.preview else "") + (", generator ran" if shown.generator_ran else ""))
        memory = engine.gpu_memory_mb()
        return [
            f"frames delivered: {view.frames_per_second():.1f} /s",
            last,
            f"full-resolution frame: {view.full_frame_ms:.0f} ms",
            f"generator: {stats.generator_ms:.0f} ms ({stats.generator_calls} runs)",
            f"rasterizer + copy: {stats.render_ms:.0f} ms ({stats.render_calls} frames)",
            f"backend used: {stats.backend or '-'}",
            f"  {engine.backend_name()}",
            f"requests: {worker.requested}, stale dropped: {worker.dropped}",
            f"UI loop: {app.loops_per_second():.0f} /s (not frames)",
            f"texture upload: {view.upload_ms:.2f} ms",
            f"Gaussians drawn: {stats.num_gaussians:,}",
            f"device: {engine.device_name()}"
            + (f", GPU memory {memory:.0f} MiB" if memory is not None else ""),
        ]

    def refresh(self) -> None:
        dpg.set_value("performance.text", "\n".join(self.lines()))
