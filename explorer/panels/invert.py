"""Invert panel: a photo in, its latent out. The fit runs in a thread of its own (`gsgan_core.invert`)
on a copy of the generator; every few steps its current image goes to the view, so the fit can be
watched while the UI stays live. The result joins the Latent panel as latent B (interpolate from a
seed to it, truncate it), the view turns to the fitted camera, and the Camera, Record and Levels
panels work on it as on any head. Results can be saved and opened again (one .safetensors); a PTI
result can be viewed with its tuned generator or with the checkpoint's.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dearpygui.dearpygui as dpg
import numpy as np

from gsgan_core.errors import GsganError
from gsgan_core.invert import (
    MODES, InversionCancelled, InversionProgress, InversionResult, InvertSettings, load_image, load_inversion,
    read_label,
)
from gsgan_core.view.video import check_output
from gsgan_core.view.viewer_camera import camera_from_orbit_pose

from .base import Panel
from .camera import CameraPanel
from .latent import LatentPanel

DEFAULT_STEPS = 100  # per stage; the command line's default is 200 (a GUI user can watch and stop early)
PREVIEW_EVERY = 5  # steps between the fit's images in the view
INSET_SHARE = 3  # the photo beside the fit: a third of the view's side, top right


def photo_on(target, background: tuple[float, float, float]) -> np.ndarray:  # -> [R, R, 3] uint8
    """The target as the fit sees it: RGB, transparent pixels on `background`."""
    import torch

    rgb = target.composite(torch.tensor(background, dtype=torch.float32))[0]  # [3, R, R]
    return (rgb.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def with_inset(image: np.ndarray, inset: np.ndarray | None, share: int = INSET_SHARE) -> np.ndarray:
    """`image` [R, R, 3] with `inset` shrunk to 1/share of its side in the top-right corner, framed."""
    if inset is None:
        return image
    size = image.shape[0]
    side = max(size // share, 4)
    rows = (np.arange(side) * inset.shape[0] // side)[:, None]  # nearest-neighbour shrink
    cols = (np.arange(side) * inset.shape[1] // side)[None, :]
    out = image.copy()
    out[: side + 2, size - side - 2:] = 0  # a dark frame
    out[1: side + 1, size - side - 1: size - 1] = inset[rows, cols]
    return out


@dataclass
class InversionJob:
    """An inversion running in a thread; the UI reads the latest report and preview."""

    image: str
    mode: str
    cancel: threading.Event = field(default_factory=threading.Event)
    report: InversionProgress | None = None  # the latest progress report
    preview: np.ndarray | None = None  # [R, R, 3] uint8: the fit's latest image
    previews: int = 0  # how many previews arrived
    photo: np.ndarray | None = None  # [R, R, 3] uint8: the image as fitted (on the fit's background)
    shown: np.ndarray | None = None  # the preview last composed ...
    composed: np.ndarray | None = None  # ... with the photo as an inset
    result: InversionResult | None = None
    error: str | None = None  # why it stopped without a result
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def progress(self, report: InversionProgress) -> None:  # in the inversion thread
        if report.preview is not None:
            self.preview = report.preview
            self.previews += 1
        self.report = report


class InvertPanel(Panel):
    title = "Invert"
    default_open = False

    def __init__(self, app):
        super().__init__(app)
        self.job: InversionJob | None = None
        self.results: dict[str, InversionResult] = {}  # by the engine's latent name (LatentState.latent_b)
        self.last: str | None = None  # name of the latest result
        self.show_fit = True  # the view shows the fit while it runs
        self.tuned: str | None = None  # name of the PTI result whose tuned generator the engine uses now
        self._base = None  # (generator, info) of the checkpoint while a tuned generator is in use

    def build_widgets(self) -> None:
        with dpg.group(horizontal=True):
            dpg.add_button(label="Image...", callback=lambda: dpg.show_item("invert.image_dialog"))
            dpg.add_input_text(tag="invert.image", width=-1, hint="photo.png (square; FFHQ-style crop for faces)")
        with dpg.group(horizontal=True):
            dpg.add_input_text(tag="invert.camera", default_value="auto", width=200,
                               hint="auto, or a label / dataset.json")
            dpg.add_text("camera")
        with dpg.group(horizontal=True):
            dpg.add_combo(list(MODES), tag="invert.mode", default_value="w+", width=70)
            dpg.add_input_int(tag="invert.steps", default_value=DEFAULT_STEPS, width=110, min_value=1,
                              min_clamped=True, label="steps per stage")
        dpg.add_checkbox(tag="invert.show_fit", label="show the fit in the view while it runs",
                         default_value=self.show_fit, callback=lambda s, a, u=None: setattr(self, "show_fit", bool(a)))
        with dpg.group(horizontal=True):
            dpg.add_button(label="Invert", tag="invert.start", callback=self.start)
            dpg.add_button(label="Cancel", tag="invert.cancel", callback=self.cancel)
            dpg.add_progress_bar(tag="invert.progress", default_value=0.0, width=-1)
        dpg.add_text("", tag="invert.result")
        dpg.add_checkbox(tag="invert.use_tuned", label="view with the PTI-tuned generator", show=False,
                         callback=lambda s, a, u=None: self.use_tuned(bool(a)))
        with dpg.group(horizontal=True):
            dpg.add_input_text(tag="invert.file", default_value="out/inversion.safetensors", width=240)
            dpg.add_button(label="Save", tag="invert.save", callback=lambda: self.save(dpg.get_value("invert.file")))
            dpg.add_button(label="Open", tag="invert.open", callback=lambda: self.open(dpg.get_value("invert.file")))
            dpg.add_button(label="...", callback=lambda: dpg.show_item("invert.file_dialog"))

    def build_popups(self) -> None:
        def chosen(tag: str):
            def callback(sender, app_data, user_data=None) -> None:
                if app_data and app_data.get("file_path_name"):
                    dpg.set_value(tag, app_data["file_path_name"])
            return callback

        with dpg.file_dialog(directory_selector=False, show=False, tag="invert.image_dialog", width=640, height=420,
                             callback=chosen("invert.image")):
            dpg.add_file_extension("Images{.png,.jpg,.jpeg,.webp,.bmp,.tif,.tiff}", color=(120, 220, 120, 255))
            dpg.add_file_extension(".*")
        with dpg.file_dialog(directory_selector=False, show=False, tag="invert.file_dialog", width=640, height=420,
                             callback=chosen("invert.file")):
            dpg.add_file_extension(".safetensors", color=(120, 220, 120, 255))

    # ------------------------------------------------------------------ running an inversion
    def start(self) -> None:
        app, engine = self.app, self.app.engine
        if self.job is not None and self.job.running:
            app.set_status("an inversion is already running")
            return
        if not engine.loaded:
            app.set_status("load a checkpoint first")
            return
        image = dpg.get_value("invert.image").strip()
        camera_text = dpg.get_value("invert.camera").strip() or "auto"
        mode = dpg.get_value("invert.mode")
        if not image:
            app.set_status("no image given: type the path of a photo to invert")
            return
        G, info = self._checkpoint_generator()
        try:  # bad files fail here, at once, with the file named
            target = load_image(image, G.config.image_resolution)
            camera = "auto" if camera_text == "auto" else read_label(camera_text, image_name=image)
            settings = InvertSettings(mode=mode, preview_every=PREVIEW_EVERY).with_steps(
                int(dpg.get_value("invert.steps"))).check()
        except GsganError as err:
            app.set_status(f"cannot invert: {err}")
            return
        job = InversionJob(image=image, mode=mode, photo=photo_on(target, settings.background))
        job.thread = threading.Thread(target=self._run, args=(job, G, info, target, camera, settings),
                                      name="gsgan-inversion", daemon=True)
        self.job = job
        job.thread.start()
        app.set_status(f"inverting {image} ({mode}, camera {'estimated' if camera_text == 'auto' else 'from ' + camera_text}) ...")

    def _checkpoint_generator(self):
        """The checkpoint's generator and info (not a PTI-tuned one the view may be using)."""
        engine = self.app.engine
        return self._base if self._base is not None else (engine.generator, engine.info)

    @staticmethod
    def _run(job: InversionJob, G, info, target, camera, settings) -> None:  # in the inversion thread
        from gsgan_core.invert import invert

        try:
            # A copy: the render worker keeps drawing with the engine's generator meanwhile.
            job.result = invert(copy.deepcopy(G), target, camera, settings, prior=info.camera,
                                progress=job.progress, cancel=job.cancel, checkpoint=str(info.path))
        except InversionCancelled as err:
            job.error = str(err)
        except GsganError as err:
            job.error = f"inversion failed: {err}"
        except Exception as err:  # shown in the status bar; the app keeps running
            job.error = f"inversion failed: {type(err).__name__}: {err}"

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel.set()

    def working(self) -> bool:
        return self.job is not None and self.job.running

    def tick(self, dt: float) -> None:
        job = self.job
        if job is None:
            return
        report = job.report
        if report is not None:
            dpg.set_value("invert.progress", report.fraction)
            dpg.configure_item("invert.progress", overlay=f"{report.stage} {report.step}/{report.steps}  "
                                                          f"loss {report.loss:.4f}")
        viewport = self.app.viewport
        if job.running:
            if self.show_fit and job.preview is not None and report is not None:
                if job.shown is not job.preview:  # a new preview: the photo goes in its corner once
                    job.shown, job.composed = job.preview, with_inset(job.preview, job.photo)
                viewport.show_overlay(job.composed, f"fitting {Path(job.image).name}: {report.stage} "
                                                    f"{report.step}/{report.steps}, loss {report.loss:.4f} "
                                                    f"(the photo top right)")
            elif viewport.overlay is not None:
                viewport.clear_overlay()
            return
        if job.thread is None:
            return
        job.thread = None  # finished: handled once
        viewport.clear_overlay()
        if job.result is None:
            self.app.set_status(job.error or "inversion stopped")
            return
        dpg.set_value("invert.progress", 1.0)
        try:
            name = self.add(job.result, f"inverted {Path(job.image).stem}")
        except GsganError as err:  # e.g. another checkpoint was loaded while it ran
            self.app.set_status(f"the inversion finished but cannot be shown: {err}")
            return
        self.app.set_status(f"inverted {job.image} in {job.result.elapsed_s:.0f} s: latent B is now {name!r} "
                            f"(Latent panel); orbit, record or export it like any head")

    # ------------------------------------------------------------------ results
    def add(self, result: InversionResult, name: str) -> str:
        """Holds a result as a latent of the engine and shows it: latent B, untruncated, at the fitted
        camera, with the tuned generator if it has one. Returns the latent's name."""
        engine = self.app.engine
        base, _ = self._checkpoint_generator()
        result.check_generator(base)
        name = engine.add_latent(name, result.ws)
        self.results[name] = result
        self.last = name
        self.app.panel(LatentPanel).show_b(name)
        self.use_tuned(result.generator_state is not None, name)
        self.app.panel(CameraPanel).place(camera_from_orbit_pose(result.pose))
        self._describe()
        return name

    def current(self) -> tuple[str, InversionResult] | None:
        """The result latent B shows, else the latest one."""
        name = self.app.state.latent.latent_b
        if name not in self.results:
            name = self.last
        return (name, self.results[name]) if name in self.results else None

    def use_tuned(self, on: bool, name: str | None = None) -> None:
        """Views with the PTI-tuned generator of result `name` (default: the current one), or with the
        checkpoint's generator again."""
        engine = self.app.engine
        if on:
            chosen = name if name is not None else (self.current() or (None,))[0]
            result = self.results.get(chosen)
            if result is None or result.generator_state is None:
                on = False
            elif self.tuned != chosen:
                base, info = self._checkpoint_generator()
                tuned = result.generator(base)
                self._base = (base, info)
                engine.set_generator(tuned, info)
                self.tuned = chosen
                self._refit_panels()
        if not on and self._base is not None:
            engine.set_generator(*self._base)
            self._base, self.tuned = None, None
            self._refit_panels()
        self._describe()

    def _refit_panels(self) -> None:
        for panel in self.app.panels:  # the same model's shape: widgets stay, caches went with the generator
            if panel is not self:
                panel.fit_model()

    def model_loaded(self) -> None:
        """Another checkpoint: a tuned generator belonged to the old one. Results stay (they are
        refused, with the reason, if they do not fit the new model)."""
        self._base, self.tuned = None, None
        latent = self.app.state.latent
        if latent.latent_b:
            try:
                self.app.engine.ws(latent)
            except GsganError:
                self.app.panel(LatentPanel).drop_b()
        self._describe()

    def _describe(self) -> None:
        found = self.current()
        if found is None:
            dpg.set_value("invert.result", "")
            dpg.configure_item("invert.use_tuned", show=False)
            return
        name, result = found
        loss = result.final_loss
        dpg.set_value("invert.result", f"{name}: {result.mode}, camera {'estimated' if result.camera_source == 'auto' else 'given'}"
                                       + (f", loss {loss:.4f}" if loss is not None else ""))
        dpg.configure_item("invert.use_tuned", show=result.generator_state is not None)
        dpg.set_value("invert.use_tuned", self.tuned == name)

    def refresh(self) -> None:
        self._describe()

    def save(self, path: str) -> None:
        found = self.current()
        if found is None:
            self.app.set_status("nothing to save: invert an image or open an inversion first")
            return
        try:
            written = found[1].save(check_output(path, (".safetensors",)))  # makes the folder
        except GsganError as err:
            self.app.set_status(f"could not save: {err}")
            return
        self.app.set_status(f"wrote {written} ({found[0]})")

    def open(self, path: str) -> None:
        """Opens a saved inversion (gsgan-invert's result.safetensors, or Save's file) and shows it."""
        if not self.app.engine.loaded:
            self.app.set_status("load the checkpoint the inversion was made with first")
            return
        try:
            result = load_inversion(path)
            name = self.add(result, f"inverted {Path(result.image).stem or Path(path).stem}")
        except GsganError as err:
            self.app.set_status(f"could not open: {err}")
            return
        self.app.set_status(f"opened {path}: latent B is now {name!r}")

    def close(self) -> None:
        self.cancel()
        if self.job is not None and self.job.thread is not None:
            self.job.thread.join(timeout=10)
