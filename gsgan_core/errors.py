"""Typed errors raised by the library. Only the CLI and the GUI turn them into messages."""

from __future__ import annotations

from pathlib import Path


class GsganError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(GsganError, ValueError):
    """A configuration value, preset name or argument is invalid."""


class UsageError(ConfigError):
    """A command was given a value it cannot take at all (an unknown name, an output of the wrong kind):
    the console's exit status is 2 for it, as for argparse's own refusals."""


class PathError(GsganError):
    """A file or folder that cannot be used: `path` names it, `problem` says what is wrong with it
    in words a user can act on. The message is "path: problem"."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # pickled across processes (DataLoader workers) with both arguments
        return type(self), (self.path, self.problem)

    @classmethod
    def check_file(cls, path, kind: str) -> Path:
        """`path` as a Path if something is there that is not a folder; else this error, "file not found"
        or "is a folder, not {kind}" (e.g. kind "an image file")."""
        path = Path(path)
        if not path.exists():
            raise cls(path, "file not found")
        if path.is_dir():
            raise cls(path, f"is a folder, not {kind}")
        return path


class CheckpointError(PathError):
    """A checkpoint file cannot be read or does not describe a valid generator."""


class PlyError(PathError):
    """A PLY file cannot be read as a 3D Gaussian splat file."""


class DatasetError(PathError):
    """A training dataset (folder or .zip with dataset.json) is missing, malformed or inconsistent.

    `path` names the dataset or the file inside it.
    """


class OutputError(PathError):
    """An output file cannot be written (bad suffix, folder missing and not creatable, read-only)."""


class RenderBackendError(GsganError, RuntimeError):
    """The requested rasterizer backend is unavailable (e.g. gsplat failed to compile)."""


class CameraError(GsganError, ValueError):
    """Camera labels or parameters have the wrong shape or values."""


class TrainingError(GsganError, RuntimeError):
    """Training cannot go on: a non-finite loss, or a training-state file that does not fit the run."""
