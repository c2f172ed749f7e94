"""The explorer's panels, one class per collapsing header, in the order they are shown. Each
writes only its own part of the state (`Panel.part`)."""

from .base import PANEL_WIDTH, Panel
from .camera import CameraPanel
from .checkpoint import CheckpointPanel
from .invert import InvertPanel
from .latent import LatentPanel
from .levels import LevelsPanel
from .performance import PerformancePanel
from .record import RecordPanel
from .render import RenderPanel

PANELS: tuple[type[Panel], ...] = (
    CheckpointPanel, LatentPanel, LevelsPanel, CameraPanel, RenderPanel, RecordPanel, InvertPanel, PerformancePanel,
)

__all__ = ["PANELS", "PANEL_WIDTH", "Panel", "CameraPanel", "CheckpointPanel", "InvertPanel", "LatentPanel", "LevelsPanel",
           "PerformancePanel", "RecordPanel", "RenderPanel"]
