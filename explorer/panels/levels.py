"""Levels panel: which levels to show (all, up to k, only k), colour by level (with its legend),
centres as dots, scale, the selected subtree, and a table: Gaussians per level and each level's
share of the view. Writes `state.levels`.

Numbers sit in table cells, which never wrap, so "16,384" or "0.412" cannot break across lines.
The shares take a render per level; the render worker measures them once the view is still.
"""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from gsgan_core.view.edits import BACKGROUND_COLOUR, LEVEL_PALETTE
from gsgan_core.view.state import LEVEL_MODES

from .base import SLIDER_WIDTH, Panel

MODE_LABELS = ("all levels", "levels up to k", "only level k")  # LEVEL_MODES, in words
NO_SELECTION = "click the view to select a coarse Gaussian"
NOT_MEASURED = "-"


def level_name(level: int) -> str:
    return "bg" if level < 0 else f"L{level}"


def legend_colour(level: int) -> tuple[int, int, int, int]:
    """The colour `colour by level` draws `level` with (edits.level_colours), as RGBA 0-255."""
    rgb = BACKGROUND_COLOUR if level < 0 else LEVEL_PALETTE[level % len(LEVEL_PALETTE)]
    return tuple(int(round(c * 255)) for c in rgb) + (255,)


class LevelsPanel(Panel):
    title, part = "Levels", "levels"

    def __init__(self, app):
        super().__init__(app)
        self.measure = False  # show each level's share of the view (L + 1 renders per latent or camera change)
        self.shares: dict[int, float] | None = None  # the last measured shares ...
        self._shares_key = None  # ... for this (model, latent, camera)
        self._measuring = None  # key of the measurement running in the worker
        self._rows: tuple[int, ...] = ()  # levels (then -1 for the background) the table has rows for

    def build_widgets(self) -> None:
        self.field(dpg.add_radio_button, "mode", items=list(MODE_LABELS), horizontal=True,
                   to_widget=lambda v: MODE_LABELS[LEVEL_MODES.index(v)],
                   from_widget=lambda v: LEVEL_MODES[MODE_LABELS.index(v)])
        self.field(dpg.add_slider_int, "level", label="k", min_value=0, max_value=1, width=SLIDER_WIDTH)
        with dpg.group(horizontal=True):
            self.field(dpg.add_checkbox, "color_by_level", label="colour by level")
            self.field(dpg.add_checkbox, "centres", label="centres as dots")
            self.field(dpg.add_checkbox, "background", label="background")
        dpg.add_group(tag="levels.legend", horizontal=True, show=False)  # filled by fit_model
        self.field(dpg.add_slider_float, "scale", label="scale x", min_value=0.05, max_value=2.0, width=SLIDER_WIDTH)
        self.toggle("levels.measure", "measure", "measure each level's share of the view")
        dpg.add_group(tag="levels.table_group")  # the table, made by fit_model (one row per level)
        dpg.add_text("", tag="levels.shown")
        with dpg.group(horizontal=True):
            dpg.add_text(NO_SELECTION, tag="levels.selection")
            dpg.add_button(label="clear", tag="levels.clear", callback=lambda: self.select(None))

    def fit_model(self) -> None:
        engine = self.app.engine
        levels = max(engine.num_levels(), 1)
        dpg.configure_item("levels.level", max_value=levels - 1)
        self.update(level=min(self.value.level, levels - 1))
        rows = tuple(sorted(engine.level_sizes(), key=lambda k: (k < 0, k)))
        if rows != self._rows:
            self._rows = rows
            self._build_legend(rows)
            self._build_table(rows)
        self.shares, self._shares_key, self._measuring = None, None, None

    def _build_legend(self, rows: tuple[int, ...]) -> None:
        for child in dpg.get_item_children("levels.legend", 1) or []:
            dpg.delete_item(child)
        dpg.add_text("legend:", parent="levels.legend")
        for level in rows:
            dpg.add_color_button(legend_colour(level), tag=f"levels.legend#{level}", parent="levels.legend",
                                 width=14, height=14, no_border=True, no_drag_drop=True)
            dpg.add_text(level_name(level), parent="levels.legend")

    def _build_table(self, rows: tuple[int, ...]) -> None:
        for child in dpg.get_item_children("levels.table_group", 1) or []:
            dpg.delete_item(child)
        with dpg.table(tag="levels.table", parent="levels.table_group", header_row=True, borders_innerH=True,
                       borders_outerH=True, policy=dpg.mvTable_SizingStretchProp):
            dpg.add_table_column(label="level")
            dpg.add_table_column(label="Gaussians")
            dpg.add_table_column(label="change without it")
            sizes = self.app.engine.level_sizes()
            for level in rows:
                with dpg.table_row():
                    dpg.add_text(level_name(level))
                    dpg.add_text(f"{sizes[level]:,}", tag=f"levels.count#{level}")
                    dpg.add_text(NOT_MEASURED, tag=f"levels.share#{level}")

    def model_loaded(self) -> None:
        self.update(selected=None)  # an index into the old model's Gaussians
        self.fit_model()

    def select(self, index: int | None) -> None:
        """Highlights the subtree under level-0 Gaussian `index` (None: no selection)."""
        self.update(selected=index)

    def colouring(self) -> bool:
        """Whether the view colours Gaussians by level (the checkbox, or the Render panel's mode)."""
        return bool(self.value.color_by_level or self.app.state.render.mode == "levels")

    def tick(self, dt: float) -> None:
        dpg.configure_item("levels.legend", show=self.colouring() and bool(self._rows))

    def refresh(self) -> None:
        engine, state = self.app.engine, self.app.state
        if not engine.loaded:
            return
        dpg.set_value("levels.shown", f"shown: {engine.stats.num_gaussians:,} Gaussians")
        selected = self.value.selected
        dpg.set_value("levels.selection", NO_SELECTION if selected is None
                      else f"selected level-0 Gaussian {selected} and its subtree")
        key = self._key()
        if self.measure and key != self._shares_key and key != self._measuring and not self.app.viewport.moving:
            self._measuring = key
            snapshot = state.copy()

            def done(outcome, key=key) -> None:
                if self._measuring == key:
                    self._measuring = None
                if outcome.error is not None:  # not measured for this key; shown as such, not retried
                    self.shares, self._shares_key = None, key
                    self.app.set_status(f"measuring the levels failed: {type(outcome.error).__name__}: {outcome.error}")
                else:
                    self.shares, self._shares_key = outcome.value, key
                self._show_shares()

            self.app.worker.submit(lambda engine: engine.level_shares(snapshot), done)
        self._show_shares()

    def _key(self):
        """What the shares depend on: (model and latent, camera)."""
        state = self.app.state
        return (self.app.engine.frame_key(state)[0][0], state.camera)

    def working(self) -> bool:
        """Shares are asked for and not yet measured for the current view (waiting for it to be still,
        or in the worker)."""
        if not (self.measure and self.app.engine.loaded):
            return False
        try:
            return self._key() != self._shares_key
        except Exception:  # a generator swapped mid-call: the next refresh decides
            return True

    def _show_shares(self) -> None:
        shares = self.shares if self.measure else None
        for level in self._rows:
            if dpg.does_item_exist(f"levels.share#{level}"):
                value = NOT_MEASURED if shares is None or level not in shares else f"{shares[level]:.3f}"
                dpg.set_value(f"levels.share#{level}", value)

    def shares_text(self) -> str:
        """The shares as shown, one "L0 0.412" per level ("" while not measured)."""
        if not self.measure or self.shares is None:
            return ""
        return ", ".join(f"{level_name(k)} {dpg.get_value(f'levels.share#{k}')}" for k in self._rows if k >= 0)
