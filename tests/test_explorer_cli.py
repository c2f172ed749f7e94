"""`gsgan-render` and `gsgan-export` end to end on CPU, their errors for bad arguments, and the
CLI layer: one error-to-exit wrapper, shared argument readers, imports that only point down."""

import argparse
import ast
import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import random_generator
from gsgan_core import arguments, cli
from gsgan_core.cli import export_main, render_main
from gsgan_core.errors import CheckpointError, ConfigError, GsganError, OutputError, UsageError
from gsgan_core.io.atomic import writing
from gsgan_core.io.checkpoint import save_checkpoint
from gsgan_core.io.ply import read_ply
from gsgan_core.models.config import preset
from gsgan_core.view.video import count_frames

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, random_generator("tiny"))
    return str(path)


def test_render_video_with_the_console_script(checkpoint, tmp_path):
    out = tmp_path / "turn.mp4"
    script = [sys.executable, "-c", "import sys; from gsgan_core.cli import render_main; sys.exit(render_main())"]
    result = subprocess.run(
        script + [checkpoint, "--seeds", "2", "--frames", "5", "--resolution", "32", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert count_frames(out) == 5
    assert "5/5" in result.stderr  # the progress bar


def test_render_grid_still_and_per_seed_outputs(checkpoint, tmp_path):
    still = tmp_path / "grid.png"
    assert render_main([checkpoint, "--seeds", "0-2", "--grid", "--frames", "1", "--resolution", "32", "--out", str(still)]) == 0
    image = iio.imread(still)
    assert image.shape == (64, 64, 3)  # 3 seeds in a 2x2 grid of 32x32 tiles
    tiles = [image[:32, :32], image[:32, 32:], image[32:, :32]]
    assert np.abs(tiles[0].astype(int) - tiles[1]).mean() > 0.5, "different seeds, different tiles"
    out = tmp_path / "each.gif"
    assert render_main([checkpoint, "--seeds", "4,5", "--trajectory", "wobble", "--frames", "2", "--resolution", "32",
                        "--out", str(out)]) == 0
    assert [count_frames(tmp_path / f"each-seed{s:04d}.gif") for s in (4, 5)] == [2, 2]
    frames = tmp_path / "interp.png"
    assert render_main([checkpoint, "--seeds", "0-1", "--trajectory", "interp", "--frames", "3", "--resolution", "32",
                        "--out", str(frames)]) == 0
    assert sorted(p.name for p in tmp_path.glob("interp_*.png")) == ["interp_0000.png", "interp_0001.png", "interp_0002.png"]


def test_export_ply_with_level_selection(checkpoint, tmp_path):
    out = tmp_path / "head.ply"
    assert export_main([checkpoint, "--seed", "7", "--levels", "0-1", "--no-background", "--out", str(out)]) == 0
    config = preset("tiny")
    gaussians = read_ply(out)
    assert gaussians.count_per_level() == {0: config.gaussians_at_level(0), 1: config.gaussians_at_level(1)}
    assert export_main([checkpoint, "--seed", "7", "--out", str(out)]) == 0
    assert read_ply(out).num_gaussians == config.num_gaussians


@pytest.mark.parametrize(
    "command, args, message",
    [
        (render_main, ["{missing}", "--out", "{tmp}/a.mp4"], "missing.safetensors: file not found"),
        (render_main, ["{tmp}", "--out", "{tmp}/a.mp4"], ": is a folder, not a generator file"),
        (render_main, ["{ckpt}", "--seeds", "5-2", "--out", "{tmp}/a.mp4"], "bad seed range '5-2'"),
        (render_main, ["{ckpt}", "--seeds", "x", "--out", "{tmp}/a.mp4"], "bad seed 'x'"),
        (render_main, ["{ckpt}", "--out", "{tmp}/blocker/a.mp4"], "is a file, not a folder"),
        (render_main, ["{ckpt}", "--out", "{tmp}/a.avi"], "unsupported file type"),
        (render_main, ["{ckpt}", "--trajectory", "interp", "--out", "{tmp}/a.mp4"], "needs at least two seeds"),
        (export_main, ["{missing}", "--out", "{tmp}/a.ply"], "missing.safetensors: file not found"),
        (export_main, ["{tmp}", "--out", "{tmp}/a.ply"], ": is a folder, not a generator file"),
        (export_main, ["{ckpt}", "--levels", "0-9", "--out", "{tmp}/a.ply"], "has levels 0..3"),
        (export_main, ["{ckpt}", "--out", "{tmp}/blocker/a.ply"], "is a file, not a folder"),
        (export_main, ["{corrupt}", "--out", "{tmp}/a.ply"], "corrupt.safetensors"),
    ],
)
def test_bad_arguments_give_clear_errors(command, args, message, checkpoint, tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 20)
    names = dict(missing=tmp_path / "missing.safetensors", tmp=tmp_path, ckpt=checkpoint, corrupt=tmp_path / "corrupt.safetensors")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert command([a.format(**names) for a in args]) == 1
    err = capsys.readouterr().err
    assert message in err and "error:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a failed command writes nothing"


def test_cli_and_library_say_the_same_about_a_folder_or_a_missing_file(tmp_path, capsys):
    from gsgan_core.io.checkpoint import load_checkpoint
    from gsgan_core.io.open import load_generator

    for path in (tmp_path, tmp_path / "missing.safetensors"):
        said = set()
        for load in (load_checkpoint, load_generator):
            with pytest.raises(CheckpointError) as caught:
                load(path)
            said.add(str(caught.value))
        assert len(said) == 1, said
        for prog, main in (("gsgan-render", render_main), ("gsgan-export", export_main)):
            assert main([str(path), "--out", str(tmp_path / ("a.mp4" if prog == "gsgan-render" else "a.ply"))]) == 1
            assert capsys.readouterr().err == f"{prog}: error: {next(iter(said))}\n"


def test_console_turns_library_errors_into_one_line_and_status_1(capsys):
    def failing(argv):
        raise ConfigError(f"bad {argv[0]}")

    assert cli.console("gsgan-x", failing, ["thing"]) == 1
    assert capsys.readouterr().err == "gsgan-x: error: bad thing\n"
    assert cli.console("gsgan-x", lambda argv: None, []) == 0
    assert not hasattr(cli, "_not_implemented")

    def refused(argv):  # a value the command cannot take at all: argparse's status, 2
        raise UsageError("--out must name a .zip file, got a.tar")

    assert cli.console("gsgan-x", refused, []) == 2
    assert capsys.readouterr().err == "gsgan-x: error: --out must name a .zip file, got a.tar\n"


def test_writing_names_the_output_that_could_not_be_written(tmp_path):
    out = tmp_path / "a.ply"
    with pytest.raises(OutputError) as caught:
        with writing(out):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value) == f"{out}: cannot write: No space left on device"
    with writing(out):
        out.write_text("fine")
    assert out.read_text() == "fine"


def test_shared_argument_readers():
    assert arguments.parse_int_list("0-2,7", "seed") == [0, 1, 2, 7]
    assert arguments.parse_device("cpu").type == "cpu"
    assert arguments.parse_resolution(8) == 8
    assert arguments.parse_fps(1000) == 1000.0
    parser = argparse.ArgumentParser()
    for add in (arguments.add_device, arguments.add_psi, arguments.add_fps, arguments.add_background):
        add(parser)
    assert vars(parser.parse_args([])) == {"device": "auto", "psi": 0.7, "fps": 30.0, "background": "1,1,1"}
    assert "-1..2" in parser.format_help() and "1000]" in parser.format_help()
    for call in (lambda: arguments.parse_device("no-such-device"), lambda: arguments.parse_resolution(4097),
                 lambda: arguments.parse_colour("1,1"), lambda: arguments.parse_int_list("", "level"),
                 lambda: arguments.parse_fps(float("nan")), lambda: arguments.parse_fps(0)):
        with pytest.raises(ConfigError):
            call()
    assert issubclass(ConfigError, GsganError)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_core_never_imports_the_app():
    uphill = {str(path.relative_to(ROOT)): sorted(m for m in _imported_modules(path) if m.split(".")[0] == "explorer")
              for path in (ROOT / "gsgan_core").rglob("*.py")}
    assert {path: names for path, names in uphill.items() if names} == {}
    headless = [str(p.relative_to(ROOT)) for p in (ROOT / "gsgan_core").rglob("*.py")
                if any(m.split(".")[0] == "dearpygui" for m in _imported_modules(p))]
    assert headless == []


# ----------------------------------------------------------------------------- numeric flags
@pytest.mark.parametrize("command, flags, message", [
    (export_main, ["--psi", "nan"], "--psi must be a finite number, got nan"),
    (export_main, ["--psi", "inf"], "--psi must be a finite number, got inf"),
    (export_main, ["--psi", "7"], "--psi must be in [-1, 2], got 7.0"),
    (export_main, ["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    (render_main, ["--psi=-inf"], "--psi must be a finite number, got -inf"),
    (render_main, ["--fps", "nan"], "--fps must be a finite number, got nan"),
    (render_main, ["--fps", "0"], "--fps must be in (0, 1000], got 0.0"),
    (render_main, ["--fps", "1e9"], "--fps must be in (0, 1000], got 1000000000.0"),
    (render_main, ["--pitch", "nan"], "--pitch must be a finite number, got nan"),
    (render_main, ["--pitch", "3"], "--pitch must be in [-1.55334, 1.55334], got 3.0"),
])
def test_numeric_flags_are_finite_and_in_range(command, flags, message, checkpoint, tmp_path, capsys):
    out = tmp_path / ("a.ply" if command is export_main else "a.png")
    assert command([checkpoint, *flags, "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"gsgan-{'export' if command is export_main else 'render'}: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- output modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(checkpoint, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        for name in ("still.png", "turn.gif", "turn.mp4"):
            assert render_main([checkpoint, "--frames", "2" if name != "still.png" else "1", "--resolution", "16",
                                "--out", str(tmp_path / name)]) == 0
        assert render_main([checkpoint, "--frames", "2", "--resolution", "16", "--out", str(tmp_path / "n.png")]) == 0
        assert export_main([checkpoint, "--out", str(tmp_path / "head.ply")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in tmp_path.iterdir()}
    assert modes == {name: oct(mode) for name in ("still.png", "turn.gif", "turn.mp4", "n_0000.png", "n_0001.png",
                                                  "head.ply")}


# ----------------------------------------------------------------------------- stopped by a signal
def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _stop_while_writing(args, folder, signum, script=None):
    """Starts a command in a subprocess, waits until its temporary file exists, sends `signum`."""
    script = script or "import sys; from gsgan_core.cli import render_main; sys.exit(render_main())"
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    before = _hidden(folder)
    try:
        deadline = time.monotonic() + 120
        while not [n for n in _hidden(folder) if ".tmp" in n and n not in before]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.02)
        time.sleep(0.2)  # well inside the write
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("name", ["turn.mp4", "frames.png"])
def test_render_stopped_by_a_signal_leaves_no_temporary_files(checkpoint, tmp_path, signum, name):
    (tmp_path / ".turn.keep.tmp.mp4").write_text("someone else's, and not this run's")
    code, err = _stop_while_writing([checkpoint, "--frames", "5000", "--resolution", "32", "--out",
                                     str(tmp_path / name)], tmp_path, signum)
    assert code == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert _hidden(tmp_path) == [".turn.keep.tmp.mp4"]  # only its own temporaries are removed
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")], "nothing half-written is left"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_export_stopped_by_a_signal_leaves_no_temporary_file(checkpoint, tmp_path, signum):
    slow_write = ("import sys, time; import gsgan_core.io.ply as ply; header = ply._header\n"
                  "ply._header = lambda records: (time.sleep(30), header(records))[1]\n"
                  "from gsgan_core.cli import export_main; sys.exit(export_main())")
    code, err = _stop_while_writing([checkpoint, "--out", str(tmp_path / "head.ply")], tmp_path, signum,
                                    script=slow_write)
    assert code == 128 + signum, err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- gsgan-dataset heads --out
def test_heads_refuses_to_overwrite_an_existing_zip_without_force(tmp_path, capsys):
    out = tmp_path / "mine.zip"
    out.write_bytes(b"a dataset someone made over a day")
    args = ["heads", "--count", "1", "--resolution", "8", "--jobs", "1", "--out", str(out)]
    assert cli.dataset_main(args) == 1
    assert capsys.readouterr().err == f"gsgan-dataset: error: {out}: already exists; add --force to replace it\n"
    assert out.read_bytes() == b"a dataset someone made over a day"
    (tmp_path / "folder.zip").mkdir()
    assert cli.dataset_main([*args[:-2], "--out", str(tmp_path / "folder.zip"), "--force"]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert cli.dataset_main([*args, "--force"]) == 0
    assert out.read_bytes()[:2] == b"PK"
