"""Latent panel: seeds A and B (or an inverted latent as B), W-space interpolation (with a ping-pong
animation), truncation, per-level mixing (take a level's w from B) and the principal directions of W.
Writes `state.latent`; the Invert panel shows its results as B here too (`show_b`, `drop_b`)."""

from __future__ import annotations

import random

import dearpygui.dearpygui as dpg

from gsgan_core.view.state import ping_pong

from .base import SLIDER_WIDTH, Panel

ANIMATE_SPEED = 0.5  # interpolation sweeps (0 -> 1) per second
NUM_DIRECTION_SLIDERS = 5
MAX_SEED = 2**31 - 1
SEED_B = "seed B"  # the B combo's first entry; the others are latents the engine holds (inversions)


class LatentPanel(Panel):
    title, part = "Latent", "latent"

    def __init__(self, app):
        super().__init__(app)
        self.animate = False  # ping-pong `interp` between 0 and 1
        self._phase = 0.0
        self._shape = (-1, -1)  # (mixable parts, directions) the dynamic widgets were made for
        self._held: tuple[str, ...] = ()  # the engine's latents the B combo lists

    def build_widgets(self) -> None:
        for name in ("a", "b"):
            with dpg.group(horizontal=True):
                self.field(dpg.add_input_int, f"seed_{name}", label=f"seed {name.upper()}", width=160,
                           min_value=0, min_clamped=True, max_value=MAX_SEED, max_clamped=True)
                dpg.add_button(label="random", tag=f"latent.random_{name}",
                               callback=lambda s, a, u: self.update(**{u: random.randrange(2**31)}),
                               user_data=f"seed_{name}")
        self.field(dpg.add_combo, "latent_b", items=[SEED_B], label="B is", width=SLIDER_WIDTH,
                   to_widget=lambda v: v or SEED_B, from_widget=lambda v: "" if v == SEED_B else v)
        self.field(dpg.add_slider_float, "interp", label="A -> B (W)", min_value=0.0, max_value=1.0, width=SLIDER_WIDTH)
        self.toggle("latent.animate", "animate", "animate (ping-pong)")
        self.field(dpg.add_slider_float, "psi", label="psi", min_value=0.0, max_value=1.0, width=SLIDER_WIDTH)
        self.field(dpg.add_slider_int, "cutoff", label="cutoff (0 = all)", min_value=0, max_value=1, width=SLIDER_WIDTH)
        dpg.add_text("per-level mixing: take w from B for")
        dpg.add_group(tag="latent.mixing", horizontal=True)
        dpg.add_text("principal directions of W (in std)")
        dpg.add_group(tag="latent.directions")

    def fit_model(self) -> None:
        """One mixing checkbox per level (and the background), one slider per direction."""
        engine = self.app.engine
        parts = engine.mixable_parts()
        directions = 0 if engine.directions is None else min(len(engine.directions), NUM_DIRECTION_SLIDERS)
        latent = self.value
        self.update(
            take_b=(latent.take_b + (False,) * len(parts))[: len(parts)],
            directions=(latent.directions + (0.0,) * directions)[:directions],
        )
        if self._shape != (len(parts), directions):
            self._shape = (len(parts), directions)
            self.clear_group("latent.mixing")
            self.clear_group("latent.directions")
            for i, name in enumerate(parts):
                self.field(dpg.add_checkbox, "take_b", index=i, parent="latent.mixing",
                           label=name.replace("level ", "L").replace("background", "bg"))
            for i in range(directions):
                self.field(dpg.add_slider_float, "directions", index=i, label=f"PC{i + 1}", min_value=-5.0,
                           max_value=5.0, width=SLIDER_WIDTH, parent="latent.directions")
        num_ws = engine.generator.config.num_ws if engine.loaded else 1
        dpg.configure_item("latent.cutoff", max_value=num_ws)
        self.refresh()

    def refresh(self) -> None:
        """B's choices: seed B and every latent the engine holds (inversions)."""
        held = tuple(self.app.engine.latents)
        if held != self._held:
            self._held = held
            dpg.configure_item("latent.latent_b", items=[SEED_B, *held])

    def show_b(self, name: str) -> None:
        """Latent `name` (one the engine holds, e.g. an inversion) as B, shown as it is: all the way
        to B, untruncated, no per-level mixing, no direction offsets."""
        latent = self.value
        self.update(latent_b=name, interp=1.0, psi=1.0, cutoff=0,
                    take_b=tuple(False for _ in latent.take_b),
                    directions=tuple(0.0 for _ in latent.directions))

    def drop_b(self) -> None:
        """B back to seed B and the view back at A (B's latent does not fit the model any more)."""
        self.update(latent_b="", interp=0.0)

    def animating(self) -> bool:
        return self.animate

    def tick(self, dt: float) -> None:
        if self.animate:
            self._phase += ANIMATE_SPEED * dt
            self.update(interp=ping_pong(self._phase))
        else:
            self._phase = self.value.interp
