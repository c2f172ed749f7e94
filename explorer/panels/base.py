"""What every panel shares: a collapsing header, widgets bound to fields of the panel's own part
of the state, and the hooks the window calls (after a load, once per frame, for readouts).

A panel owns one part of `ExplorerState` (`part`, e.g. "latent"). Its widgets never edit that
part in place: a widget callback replaces it with a copy that differs in one field, so the parts
stay frozen and can serve as the engine's cache keys. Other panels and the view change a part only
through its owner's methods (e.g. `CameraPanel.move`, `LatentPanel.show_b`). Options that only the
window needs (the animate and auto-rotate toggles, measuring) are plain attributes of the panel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import dearpygui.dearpygui as dpg

if TYPE_CHECKING:
    from explorer.window import ExplorerApp

PANEL_WIDTH = 430
SLIDER_WIDTH = 220


def _same(a: Any) -> Any:
    return a


@dataclass
class Field:
    """A widget that shows field `name` of its panel's part (entry `index` of it, for tuples)."""

    name: str
    index: int | None = None
    to_widget: Callable[[Any], Any] = _same
    from_widget: Callable[[Any], Any] = _same
    sync: bool = True  # show changes the state got from elsewhere (mouse, animation, a load)
    shown: Any = None  # what the widget shows now

    def read(self, part: Any) -> Any:  # the widget value for `part`
        value = getattr(part, self.name)
        return self.to_widget(value if self.index is None else value[self.index])

    def written(self, part: Any, widget_value: Any) -> Any:  # a copy of `part` holding the widget's value
        value = self.from_widget(widget_value)
        if self.index is not None:
            items = list(getattr(part, self.name))
            items[self.index] = value
            value = tuple(items)
        return replace(part, **{self.name: value})


def _shows(shown: Any, value: Any) -> bool:
    if shown == value:
        return True
    return isinstance(value, float) and isinstance(shown, (int, float)) and math.isclose(shown, value, abs_tol=1e-6)


class Panel:
    title = ""
    part: str | None = None  # the ExplorerState field this panel writes
    default_open = True

    def __init__(self, app: "ExplorerApp"):
        self.app = app
        self.fields: dict[str, Field] = {}  # by widget tag

    # ------------------------------------------------------------------ its part of the state
    @property
    def value(self) -> Any:
        return getattr(self.app.state, self.part)

    def update(self, **changes: Any) -> None:
        setattr(self.app.state, self.part, replace(self.value, **changes))

    # ------------------------------------------------------------------ hooks
    def build(self) -> None:
        with dpg.collapsing_header(label=self.title, default_open=self.default_open):
            self.build_widgets()

    def build_widgets(self) -> None:
        raise NotImplementedError

    def build_popups(self) -> None:
        """Windows of their own (file dialogs), made after the main window."""

    def fit_model(self) -> None:
        """Widgets whose range or number depends on the model (at start and after a load)."""

    def model_loaded(self) -> None:
        """A new checkpoint was loaded: reset what belonged to the old one."""
        self.fit_model()

    def tick(self, dt: float) -> None:
        """Before each frame: animations, polling (dt in seconds)."""

    def animating(self) -> bool:
        """Whether this panel moves the view by itself now (the view then renders previews)."""
        return False

    def working(self) -> bool:
        """Whether this panel has work in flight whose progress it shows (the UI keeps its full rate)."""
        return self.animating()

    def refresh(self) -> None:
        """Readouts, every few frames."""

    def close(self) -> None:
        """The window is closing."""

    # ------------------------------------------------------------------ bound widgets
    def field(self, add: Callable[..., Any], name: str, *, index: int | None = None, tag: str | None = None,
              to_widget: Callable[[Any], Any] = _same, from_widget: Callable[[Any], Any] = _same,
              sync: bool = True, **kwargs: Any) -> str:
        """Adds a widget (`add`, e.g. dpg.add_slider_float) that shows and writes field `name`."""
        tag = tag or f"{self.part}.{name}" + ("" if index is None else f"#{index}")
        bound = Field(name, index, to_widget, from_widget, sync)
        bound.shown = bound.read(self.value)
        self.fields[tag] = bound
        add(tag=tag, default_value=bound.shown, callback=self._on_field, **kwargs)
        return tag

    def _on_field(self, sender, app_data, user_data=None) -> None:
        """Every bound widget's callback: write the value into this panel's part, nothing else."""
        bound = self.fields[sender]
        setattr(self.app.state, self.part, bound.written(self.value, app_data))
        bound.shown = app_data

    def toggle(self, tag: str, attribute: str, label: str) -> None:
        """A checkbox for a panel option (not part of the state)."""
        dpg.add_checkbox(tag=tag, label=label, default_value=getattr(self, attribute),
                         callback=lambda s, a, u=None: setattr(self, attribute, bool(a)))

    def clear_group(self, group: str) -> None:
        """Deletes the widgets in `group` and forgets their fields."""
        for child in dpg.get_item_children(group, 1) or []:
            self.fields.pop(dpg.get_item_alias(child) or child, None)
            dpg.delete_item(child)

    def sync(self) -> None:
        """Shows state changes that did not come from the widget itself (mouse, animation, loads)."""
        if self.part is None:
            return
        part = self.value
        for tag, bound in self.fields.items():
            if bound.sync:
                value = bound.read(part)
                if not _shows(bound.shown, value):
                    dpg.set_value(tag, value)
                    bound.shown = value
