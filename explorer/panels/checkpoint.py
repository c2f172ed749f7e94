"""Checkpoint panel: open a file (typed path, file dialog or recent list) and say what it holds.

Loading is imperative: `load(path)` asks the engine to load, and only on success tells the other
panels (`ExplorerApp.model_loaded`). On failure the status bar says why and the old model stays.
"""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from gsgan_core.errors import GsganError
from gsgan_core.io.open import import_note

from ..recent import RecentFiles
from .base import PANEL_WIDTH, Panel
from .levels import level_name


class CheckpointPanel(Panel):
    title = "Checkpoint"

    def __init__(self, app):
        super().__init__(app)
        self.recent = RecentFiles()

    def build_widgets(self) -> None:
        dpg.add_input_text(tag="checkpoint.path", default_value="", width=-1, hint="path/to/model.safetensors")
        with dpg.group(horizontal=True):
            dpg.add_button(label="Open...", callback=lambda: dpg.show_item("checkpoint.dialog"))
            dpg.add_button(label="Load", tag="checkpoint.load", callback=lambda: self.load(dpg.get_value("checkpoint.path")))
            dpg.add_combo(self.recent.items, tag="checkpoint.recent", label="recent", width=200,
                          callback=lambda s, a, u=None: self.load(a))
        dpg.add_text("", tag="checkpoint.preset", wrap=PANEL_WIDTH - 40)  # names: may wrap between words
        dpg.add_text("", tag="checkpoint.info")  # short lines of numbers: never wrapped
        dpg.add_group(tag="checkpoint.levels_group")  # Gaussians per level, a table (cells never wrap)

    def build_popups(self) -> None:
        with dpg.file_dialog(
            directory_selector=False, show=False, tag="checkpoint.dialog", width=640, height=420,
            callback=lambda s, a, u=None: self.load(a.get("file_path_name", "")) if a else None,
        ):
            dpg.add_file_extension(".safetensors", color=(120, 220, 120, 255))
            dpg.add_file_extension(".pkl", color=(220, 200, 120, 255))

    def load(self, path: str) -> bool:
        """Loads a checkpoint or an official snapshot; False (and the reason in the status bar) on failure."""
        app, engine = self.app, self.app.engine
        path = str(path).strip()
        if not path:
            app.set_status("no file given: type a path or use Open...")
            return False
        app.set_status(f"loading {path} ...")
        try:
            info = engine.load(path)
        except (GsganError, OSError) as err:
            app.set_status(f"could not load: {err}" + ("; the previous model stays loaded" if engine.loaded else ""))
            return False
        dpg.set_value("checkpoint.path", path)
        problem = self.recent.add(path)
        dpg.configure_item("checkpoint.recent", items=self.recent.items)
        app.model_loaded()
        notes = [note for note in (import_note(info), problem) if note]
        app.set_status(f"loaded {path} ({info.config.num_gaussians:,} Gaussians)" + "".join(f"; {n}" for n in notes))
        return True

    def fit_model(self) -> None:
        facts = self.app.engine.describe()
        dpg.set_value("checkpoint.preset", f"preset {facts['preset']}\ndataset: {facts['dataset']}" if facts
                      else "no checkpoint loaded")
        dpg.set_value("checkpoint.info", self.describe())
        for child in dpg.get_item_children("checkpoint.levels_group", 1) or []:
            dpg.delete_item(child)
        if not facts:
            return
        sizes = dict(facts["gaussians per level"])
        if facts["background Gaussians"]:
            sizes[-1] = facts["background Gaussians"]
        with dpg.table(tag="checkpoint.levels", parent="checkpoint.levels_group", header_row=True,
                       borders_innerV=True, borders_outerH=True, policy=dpg.mvTable_SizingStretchSame):
            for level in sizes:
                dpg.add_table_column(label=level_name(level))
            dpg.add_table_column(label="total")
            with dpg.table_row():
                for level, count in sizes.items():
                    dpg.add_text(f"{count:,}", tag=f"checkpoint.count#{level}")
                dpg.add_text(f"{sum(sizes.values()):,}")

    def describe(self) -> str:
        """The checkpoint's facts in short lines (the preset and the per-level table are apart)."""
        facts = self.app.engine.describe()
        if not facts:
            return ""
        return "\n".join([
            f"{facts['resolution']} px, trained {facts['kimg']:,g} kimg",
            "Gaussians per level:",
        ])
