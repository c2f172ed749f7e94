"""`gsgan-render` and `gsgan-export` end to end on CPU, their errors for bad arguments, and the
CLI layer: one error-to-exit wrapper, shared argument readers, imports that only point down."""

import ast
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import random_generator
from gsgan_core import arguments, cli
from gsgan_core.cli import export_main, render_main
from gsgan_core.errors import ConfigError, GsganError
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
        (render_main, ["{missing}", "--out", "{tmp}/a.mp4"], "missing.safetensors: no such file"),
        (render_main, ["{ckpt}", "--seeds", "5-2", "--out", "{tmp}/a.mp4"], "bad seed range '5-2'"),
        (render_main, ["{ckpt}", "--seeds", "x", "--out", "{tmp}/a.mp4"], "bad seed 'x'"),
        (render_main, ["{ckpt}", "--out", "{tmp}/blocker/a.mp4"], "is a file, not a folder"),
        (render_main, ["{ckpt}", "--out", "{tmp}/a.avi"], "unsupported file type"),
        (render_main, ["{ckpt}", "--trajectory", "interp", "--out", "{tmp}/a.mp4"], "needs at least two seeds"),
        (export_main, ["{missing}", "--out", "{tmp}/a.ply"], "missing.safetensors: no such file"),
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


def test_console_turns_library_errors_into_one_line_and_status_1(capsys):
    def failing(argv):
        raise ConfigError(f"bad {argv[0]}")

    assert cli.console("gsgan-x", failing, ["thing"]) == 1
    assert capsys.readouterr().err == "gsgan-x: error: bad thing\n"
    assert cli.console("gsgan-x", lambda argv: None, []) == 0
    assert not hasattr(cli, "_not_implemented")


def test_shared_argument_readers():
    assert arguments.parse_int_list("0-2,7", "seed") == [0, 1, 2, 7]
    assert arguments.parse_device("cpu").type == "cpu"
    assert arguments.parse_resolution(8) == 8
    for call in (lambda: arguments.parse_device("no-such-device"), lambda: arguments.parse_resolution(4097),
                 lambda: arguments.parse_colour("1,1"), lambda: arguments.parse_int_list("", "level")):
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
