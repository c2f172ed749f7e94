"""Performance panel: GUI frame rate, generator and rasterizer times, texture upload, Gaussians
drawn, device and GPU memory. Reads only; writes nothing."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from .base import Panel


class PerformancePanel(Panel):
    title = "Performance"
    default_open = False

    def build_widgets(self) -> None:
        dpg.add_text("", tag="performance.text")

    def refresh(self) -> None:
        engine, stats = self.app.engine, self.app.engine.stats
        memory = engine.gpu_memory_mb()
        dpg.set_value("performance.text", "\n".join([
            f"GUI FPS: {dpg.get_frame_rate():.1f}",
            f"generator: {stats.generator_ms:.1f} ms ({stats.generator_calls} runs)",
            f"rasterizer + copy: {stats.render_ms:.1f} ms ({stats.render_calls} frames)",
            f"texture upload (CPU): {self.app.viewport.upload_ms:.2f} ms",
            f"Gaussians drawn: {stats.num_gaussians:,}",
            f"device: {engine.device_name()}",
            f"GPU memory: {memory:.0f} MiB" if memory is not None else "GPU memory: (CPU)",
        ]))
