"""Atomic file writes: a reader never sees a half-written file, and a crash never destroys the old one.

Every temporary file gsgan writes is made here, beside its output and hidden (".NAME.XXXXXXXX.tmp",
tempfile.mkstemp's 8 random characters; FrameWriter adds the kind: ".tmp.mp4"), and is recorded until
it is renamed into place or removed. `removing_temporaries_on_signals` turns SIGTERM and SIGINT into a
clean stop that removes what this process had not finished: only files it made, never a pattern match.
Finished outputs get the mode a plain open() would give them (0666 less the umask), not mkstemp's 0600.
`writing(path)` turns the OSError of a failed write into an OutputError naming the output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from gsgan_core.errors import OutputError

_live: set[Path] = set()  # temporaries this process made and has neither renamed nor removed


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def temporary_beside(path: str | os.PathLike, suffix: str = ".tmp", stem: str | None = None) -> Path:
    """A new empty file ".{stem or name}.XXXXXXXX{suffix}" in `path`'s folder, recorded as this process's.
    Raises OSError (e.g. PermissionError) if the folder is not writable."""
    path = Path(path)
    with _signals_held():  # a stop between creating and recording it would leave it behind
        fd, tmp = tempfile.mkstemp(prefix=f".{stem or path.name}.", suffix=suffix,
                                   dir=path.parent if str(path.parent) else ".")
        tmp_path = Path(tmp)
        _live.add(tmp_path)
    os.close(fd)
    return tmp_path


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait (this thread) until the block is over; then they are delivered."""
    if not hasattr(signal, "pthread_sigmask"):  # not on Windows
        yield
        return
    held = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def publish(tmp: Path, path: str | os.PathLike) -> None:
    """Renames a finished temporary over `path`, with the mode a plain open() would give it: mkstemp
    (and safetensors' writer) leave files 0600, but outputs are meant to be read like any other file."""
    os.chmod(tmp, 0o666 & ~_current_umask())
    os.replace(tmp, path)
    _live.discard(Path(tmp))


def discard(tmp: Path) -> None:
    """Removes a temporary (already gone is fine)."""
    with contextlib.suppress(FileNotFoundError):
        Path(tmp).unlink()
    _live.discard(Path(tmp))


def remove_temporaries() -> list[Path]:
    """Removes every temporary this process made and has not finished; returns them."""
    left = sorted(_live)
    for tmp in left:
        discard(tmp)
    return left


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it is fsync'ed and renamed over `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    Raises OSError (e.g. PermissionError) if the folder is not writable.
    """
    path = Path(path)
    tmp_path = temporary_beside(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        publish(tmp_path, path)
    except BaseException:
        discard(tmp_path)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Inside: an OSError (disk full, read-only folder, ...) becomes OutputError(path, "cannot write: reason")."""
    try:
        yield
    except OSError as err:
        raise OutputError(path, f"cannot write: {err.strerror or err}") from None


class Stopped(SystemExit):
    """SIGTERM or SIGINT arrived: unwinds like any exception (writers abort and remove their temporaries),
    then exits with status 128 + the signal's number, as a shell reports a process ended by that signal."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(128 + signum)


@contextlib.contextmanager
def removing_temporaries_on_signals(prog: str) -> Iterator[None]:
    """Inside: SIGTERM and SIGINT stop the command cleanly. Every temporary file this process made and had
    not finished is removed, one line says so on stderr, and the exit status is 128 + the signal's number.
    (Only in the main thread, where Python delivers signals; elsewhere this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)

    wanted = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, stop) for s in wanted}
    try:
        yield
    except Stopped as stopped:
        with contextlib.suppress(Stopped):  # a second signal while cleaning up changes nothing
            removed = remove_temporaries()
            note = f"; removed {len(removed)} unfinished temporary file(s)" if removed else ""
            print(f"{prog}: stopped by {signal.Signals(stopped.signum).name}; nothing half-written is left{note}",
                  file=sys.stderr)
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
