"""Writing frames to MP4 (H.264), GIF or numbered PNGs, atomically.

Frames go to temporary files beside the output; only a finished recording is renamed into
place, so a cancel, a crash or a full disk never leaves a half-written video (or destroys an
older one of the same name).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np

from gsgan_core.arguments import parse_number
from gsgan_core.errors import OutputError
from gsgan_core.io.atomic import discard, publish, temporary_beside

__all__ = ["VIDEO_SUFFIXES", "FrameWriter", "OutputError", "check_output", "count_frames", "numbered_png"]

VIDEO_SUFFIXES = (".mp4", ".gif", ".png")


def check_output(path: str | os.PathLike, suffixes: tuple[str, ...]) -> Path:
    """Checks `path` can be written before any work starts; creates its folder if missing."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise OutputError(path, f"unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(suffixes)}")
    if path.is_dir():
        raise OutputError(path, "is a folder; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise OutputError(path, f"{part} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(path, f"cannot create the folder {folder}: {err.strerror or err}") from None
    try:  # the only honest test of writability (root ignores permission bits; read-only mounts do not)
        discard(temporary_beside(path, suffix=".probe"))
    except OSError as err:
        raise OutputError(path, f"the folder {folder} is not writable: {err.strerror or err}") from None
    return path


def numbered_png(path: Path, index: int) -> Path:
    """`out.png` -> `out_0007.png`: where frame 7 of a multi-frame PNG recording goes."""
    return path.with_name(f"{path.stem}_{index:04d}{path.suffix}")


def _temporary(path: Path, suffix: str) -> Path:  # ".STEM.XXXXXXXX.tmp.mp4" beside `path`
    return temporary_beside(path, suffix=f".tmp{suffix}", stem=path.stem)


class FrameWriter:
    """`append` frames ([H, W, 3] uint8), then `commit` (rename into place) or `abort`.

    Usable as a context manager: it commits on success and aborts on an exception.
    `.png` with one frame writes `path` itself; with more, `path`'s stem plus _0000, _0001, ...
    """

    def __init__(self, path: str | os.PathLike, fps: float, expected_frames: int = 0):
        self.fps = float(parse_number(fps, "fps", 0, low_open=True))  # ConfigError for NaN, infinities, <= 0
        self.path = check_output(path, VIDEO_SUFFIXES)
        self.kind = self.path.suffix.lower()
        self.expected_frames = expected_frames
        self.count = 0
        self._temps: list[tuple[Path, Path]] = []  # (temporary, final)
        self._gif_frames: list[np.ndarray] = []
        self._ffmpeg = None
        self._done = False

    def append(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
        if self.kind == ".mp4":
            # H.264 in yuv420p needs even sizes: pad by one pixel rather than resample.
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if self._ffmpeg is None:
                tmp = _temporary(self.path, ".mp4")
                self._temps.append((tmp, self.path))
                self._ffmpeg = imageio_v2.get_writer(
                    tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264", quality=8,
                    macro_block_size=1, ffmpeg_log_level="error",
                )
            self._ffmpeg.append_data(frame)
        elif self.kind == ".gif":
            self._gif_frames.append(frame)
        else:
            tmp = _temporary(self.path, ".png")
            iio.imwrite(tmp, frame, extension=".png")
            self._temps.append((tmp, None))
        self.count += 1

    def commit(self) -> list[Path]:
        """Finishes the file(s) and renames them into place; returns the paths written."""
        if self.count == 0:
            self.abort()
            raise OutputError(self.path, "no frames were recorded")
        if self.kind == ".mp4":
            self._ffmpeg.close()
            self._ffmpeg = None
        elif self.kind == ".gif":
            tmp = _temporary(self.path, ".gif")
            self._temps.append((tmp, self.path))
            iio.imwrite(tmp, np.stack(self._gif_frames), extension=".gif", duration=1000.0 / self.fps, loop=0)
            self._gif_frames = []
        else:  # PNG: one frame is the file itself, more are numbered
            single = len(self._temps) == 1
            self._temps = [(tmp, self.path if single else numbered_png(self.path, i)) for i, (tmp, _) in enumerate(self._temps)]
        written = []
        for tmp, final in self._temps:
            publish(tmp, final)  # the umask's mode (0644 under umask 022), not mkstemp's 0600
            written.append(final)
        self._temps = []
        self._done = True
        return written

    def abort(self) -> None:
        """Drops everything written so far; an older file at `path` is untouched."""
        if self._ffmpeg is not None:
            with contextlib.suppress(Exception):
                self._ffmpeg.close()
            self._ffmpeg = None
        for tmp, _ in self._temps:
            discard(tmp)
        self._temps, self._gif_frames = [], []
        self._done = True

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames in an MP4 or GIF (for tests and the GUI's status line)."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        reader = imageio_v2.get_reader(path, format="FFMPEG")
        try:
            return reader.count_frames()
        finally:
            reader.close()
    return len(iio.imread(path, index=None))
