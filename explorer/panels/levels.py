"""Levels panel: which levels to show (all, up to k, only k), colour by level, centres as dots,
scale, the selected subtree, and readouts: counts per level and each level's share of the view.
Writes `state.levels`."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from gsgan_core.view.state import LEVEL_MODES

from .base import PANEL_WIDTH, SLIDER_WIDTH, Panel

MODE_LABELS = ("all levels", "levels up to k", "only level k")  # LEVEL_MODES, in words
NO_SELECTION = "click the view to select a coarse Gaussian"


class LevelsPanel(Panel):
    title, part = "Levels", "levels"

    def __init__(self, app):
        super().__init__(app)
        self.measure = False  # show each level's share of the view (L + 1 renders per latent or camera change)

    def build_widgets(self) -> None:
        self.field(dpg.add_radio_button, "mode", items=list(MODE_LABELS), horizontal=True,
                   to_widget=lambda v: MODE_LABELS[LEVEL_MODES.index(v)],
                   from_widget=lambda v: LEVEL_MODES[MODE_LABELS.index(v)])
        self.field(dpg.add_slider_int, "level", label="k", min_value=0, max_value=1, width=SLIDER_WIDTH)
        with dpg.group(horizontal=True):
            self.field(dpg.add_checkbox, "color_by_level", label="colour by level")
            self.field(dpg.add_checkbox, "centres", label="centres as dots")
            self.field(dpg.add_checkbox, "background", label="background")
        self.field(dpg.add_slider_float, "scale", label="scale x", min_value=0.05, max_value=2.0, width=SLIDER_WIDTH)
        dpg.add_text("", tag="levels.counts", wrap=PANEL_WIDTH - 30)
        self.toggle("levels.measure", "measure", "measure each level's share of the view")
        dpg.add_text("", tag="levels.shares", wrap=PANEL_WIDTH - 30)
        with dpg.group(horizontal=True):
            dpg.add_text(NO_SELECTION, tag="levels.selection")
            dpg.add_button(label="clear", tag="levels.clear", callback=lambda: self.select(None))

    def fit_model(self) -> None:
        levels = max(self.app.engine.num_levels(), 1)
        dpg.configure_item("levels.level", max_value=levels - 1)
        self.update(level=min(self.value.level, levels - 1))

    def model_loaded(self) -> None:
        self.update(selected=None)  # an index into the old model's Gaussians
        self.fit_model()

    def select(self, index: int | None) -> None:
        """Highlights the subtree under level-0 Gaussian `index` (None: no selection)."""
        self.update(selected=index)

    def refresh(self) -> None:
        engine, state = self.app.engine, self.app.state
        if not engine.loaded:
            return
        counts = sorted(engine.level_counts(state).items(), key=lambda kv: (kv[0] < 0, kv[0]))
        dpg.set_value("levels.counts", "counts: " + ", ".join(f"{'bg' if k < 0 else f'L{k}'} {v:,}" for k, v in counts)
                      + f"; shown {engine.stats.num_gaussians:,}")
        shares = engine.level_shares(state) if self.measure else None
        dpg.set_value("levels.shares", "" if shares is None else "change without it: " + ", ".join(
            f"L{k} {v:.3f}" for k, v in sorted(shares.items()) if k >= 0))
        selected = self.value.selected
        dpg.set_value("levels.selection", NO_SELECTION if selected is None
                      else f"selected level-0 Gaussian {selected} and its subtree")
