"""Record panel: a video of a trajectory (in a thread, with progress and cancel), a screenshot
of the current frame, and the current Gaussians as a PLY file. Writes `state.record`."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace

import dearpygui.dearpygui as dpg

from gsgan_core.errors import GsganError
from gsgan_core.io.ply import write_ply
from gsgan_core.view.recording import Cancelled, record, trajectory
from gsgan_core.view.state import TRAJECTORIES
from gsgan_core.view.video import FrameWriter, check_output

from .base import Panel
from .render import RESOLUTIONS


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


class RecordPanel(Panel):
    title, part = "Record", "record"
    default_open = False

    def __init__(self, app):
        super().__init__(app)
        self.job: RecordingJob | None = None

    def build_widgets(self) -> None:
        self.field(dpg.add_combo, "trajectory", items=list(TRAJECTORIES), label="trajectory", width=140)
        self.field(dpg.add_input_int, "frames", label="frames", width=140, min_value=1, min_clamped=True)
        self.field(dpg.add_input_int, "fps", label="fps", width=140, min_value=1, min_clamped=True)
        self.field(dpg.add_combo, "resolution", items=[str(r) for r in RESOLUTIONS], label="resolution",
                   to_widget=str, from_widget=int, width=140)
        self.field(dpg.add_slider_float, "pitch", label="turntable pitch (deg)", min_value=-60, max_value=60,
                   width=140, to_widget=math.degrees, from_widget=math.radians)
        self.field(dpg.add_input_text, "out", label=".mp4/.gif/.png", width=240)
        with dpg.group(horizontal=True):
            dpg.add_button(label="Record", tag="record.start", callback=self.start)
            dpg.add_button(label="Cancel", tag="record.cancel", callback=self.cancel)
            dpg.add_progress_bar(tag="record.progress", default_value=0.0, width=200)
        self.field(dpg.add_input_text, "screenshot", label="screenshot", width=240)
        dpg.add_button(label="Screenshot (PNG)", tag="record.screenshot_button", callback=self.screenshot)
        self.field(dpg.add_input_text, "ply", label="PLY", width=240)
        dpg.add_button(label="Export PLY (current Gaussians, level selection)", tag="record.ply_button",
                       callback=self.export_ply)

    # ------------------------------------------------------------------ recording
    def start(self) -> None:
        app = self.app
        if self.job is not None and self.job.running:
            app.set_status("a recording is already running")
            return
        if not app.engine.loaded:
            app.set_status("load a checkpoint first")
            return
        settings = self.value
        snapshot = app.state.copy()
        snapshot.render = replace(snapshot.render, resolution=int(settings.resolution))
        try:
            states = trajectory(snapshot, settings.trajectory, int(settings.frames), pitch=settings.pitch)
            FrameWriter(settings.out, settings.fps)  # checks the output now, in the UI, before the thread starts
        except GsganError as err:
            app.set_status(f"cannot record: {err}")
            return
        self.job = RecordingJob(out=settings.out, total=len(states))
        self.job.thread = threading.Thread(target=self._run, args=(self.job, states, settings.fps),
                                           name="gsgan-recording", daemon=True)
        self.job.thread.start()
        app.set_status(f"recording {self.job.total} frames to {self.job.out} ...")

    def _run(self, job: RecordingJob, states: list, fps: float) -> None:  # in the recording thread
        try:
            job.written = record(self.app.engine, [[s] for s in states], job.out, fps,
                                 progress=lambda done, total: setattr(job, "done", done), cancel=job.cancel)
        except Cancelled as err:
            job.error = str(err)
        except Exception as err:  # shown in the status bar; the app keeps running
            job.error = f"recording failed: {type(err).__name__}: {err}"

    def working(self) -> bool:
        return self.job is not None and self.job.running

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel.set()

    def tick(self, dt: float) -> None:
        job = self.job
        if job is None:
            return
        dpg.set_value("record.progress", job.done / max(job.total, 1))
        dpg.configure_item("record.progress", overlay=f"{job.done}/{job.total}")
        if not job.running and job.thread is not None:
            self.app.set_status(job.error or f"wrote {', '.join(str(p) for p in job.written[:1])} ({job.done} frames)")
            job.thread = None

    def close(self) -> None:
        self.cancel()
        if self.job is not None and self.job.thread is not None:
            self.job.thread.join(timeout=10)

    # ------------------------------------------------------------------ stills (in the render worker)
    def screenshot(self) -> None:
        out, state = self.value.screenshot, self.app.state.copy()

        def write(engine) -> str:
            with FrameWriter(out, fps=1) as writer:
                writer.append(engine.frame(state).image)
            return f"wrote {out}"

        self.app.worker.submit(write, lambda outcome: self._report(outcome, "screenshot failed"))

    def export_ply(self) -> None:
        out, state = self.value.ply, self.app.state.copy()

        def export(engine) -> str:
            check_output(out, (".ply",))
            gaussians = engine.export_gaussians(state)
            write_ply(out, gaussians)
            return f"wrote {out} ({gaussians.num_gaussians:,} Gaussians)"

        self.app.worker.submit(export, lambda outcome: self._report(outcome, "PLY export failed"))

    def _report(self, outcome, failed: str) -> None:
        error = outcome.error
        if error is None:
            self.app.set_status(outcome.value)
        elif isinstance(error, (GsganError, OSError)):
            self.app.set_status(f"{failed}: {error}")
        else:
            self.app.set_status(f"{failed}: {type(error).__name__}: {error}")
