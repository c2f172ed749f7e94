"""Property-based tests of checkpoint loading and of the CLIs' numeric flags.

Checkpoints: valid files of both architectures (float32 and float16) with one part replaced by generated
values: any metadata entry, any config key, any field of `training`/`dataset`/`camera`, any header entry;
or cut short, lengthened, bytes flipped, tensors relabelled with another dtype. Every case either loads
(`load_checkpoint` and `read_checkpoint_info` agree) or raises a CheckpointError naming the file; any other
exception fails the test, and so does the loader's last-resort message ("cannot be built"), which would
mean a config passed every check and then broke the network's construction.

Flags: any text or number for each numeric flag of gsgan-render, gsgan-export and gsgan-metrics gives
exit status 1 (or argparse's 2) and one line naming the flag, or, in range, goes on to the next check.
docs/ROBUSTNESS.md (Checkpoints, Flags) lists what is tried and how many cases.
Run with `--hypothesis-show-statistics` to see how the cases split between refused and loaded.
"""

import dataclasses
import json
import math
import os
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gsgan_core import arguments
from gsgan_core.cli import export_main, metrics_main, render_main
from gsgan_core.errors import CheckpointError, ConfigError
from gsgan_core.io.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from gsgan_core.models import build_generator
from gsgan_core.models.config import preset
from gsgan_core.view.state import RESOLUTION_RANGE

DTYPES = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "I64",
          "U64", "F64"]
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


SCALE = float(os.environ.get("GSGAN_FUZZ_SCALE", "1"))  # e.g. 20 for a longer search than CI's few seconds


def fast(examples: int) -> settings:
    """A few seconds a test; no example database written into the working tree."""
    return settings(max_examples=max(1, round(examples * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def note(what: str) -> None:
    try:
        event(what)
    except Exception:  # outside a generated case
        pass


# ----------------------------------------------------------------------------- valid files to start from
# Small versions of both architectures, so that a case that loads takes milliseconds.
SMALL = {
    "lite": preset("tiny", z_dim=16, w_dim=16, num_points=16, channels=(16, 16, 8, 8), knn_k=4, background_points=8,
                   view_embed_dim=4),
    "gsgan": preset("gsgan-tiny", z_dim=16, w_dim=16, num_points=16, knn_k=4, pe_res=8, view_embed_dim=4,
                    background_points=8, background_channels=8),
}


_ORIGINALS: dict[str, bytes] = {}


def original(which: str) -> bytes:
    """The bytes of a valid checkpoint: "lite/float32", "gsgan/float16", ... (made once, kept in memory; not a
    fixture, so that a failing case's report does not print them)."""
    if not _ORIGINALS:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            for name, config in SMALL.items():
                torch.manual_seed(0)
                generator = build_generator(config)
                for dtype in (torch.float32, torch.float16):
                    path = Path(folder) / f"{name}.safetensors"
                    save_checkpoint(path, generator, training={"kimg": 1.5, "step": 3}, weight_dtype=dtype)
                    _ORIGINALS[f"{name}/{str(dtype)[6:]}"] = path.read_bytes()
    return _ORIGINALS[which]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "case.safetensors"


def split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header, payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def outcome(path: Path) -> str:
    """"loaded" or "refused"; anything else than a CheckpointError naming the file fails the test."""
    results = []
    for reader in (read_checkpoint_info, load_checkpoint):
        try:
            reader(path)
            results.append("loaded")
        except CheckpointError as err:
            message = str(err)
            assert message.startswith(f"{path}: "), message
            assert "cannot be built" not in message, f"a config passed the checks and broke the build: {message}"
            assert "\n" not in message, message
            results.append("refused")
    # The info reader checks the metadata only, so it may accept what the full load refuses; never the reverse.
    assert results != ["refused", "loaded"], "read_checkpoint_info refused a file load_checkpoint loaded"
    if results[1] == "loaded":  # what loads also runs: a config the checks let through must not crash a forward pass
        G, _ = load_checkpoint(path)
        with torch.no_grad():
            G(torch.randn(1, G.config.z_dim), torch.zeros(1, G.config.c_dim))
    note(f"{results[1]}")
    return results[1]


# ----------------------------------------------------------------------------- generated values
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.integers(-3, 600)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
                | st.sampled_from(["128", "1e400", "NaN", "lite", "gsgan", "float16", "F16", "", "2"])
                | st.sampled_from([10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 1e308, 5e-324]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def near(value):
    """Values a hostile or damaged file might hold where `value` was: any JSON, or one of the same kind."""
    same_kind = {bool: st.booleans(), int: st.integers(-3, 600) | st.integers(-(2**65), 2**65),
                 float: st.floats(allow_nan=True, allow_infinity=True) | st.floats(-5, 5),
                 str: st.text(max_size=10)}
    if isinstance(value, (list, tuple)) and value:
        items = near(value[0])
        return json_values | st.lists(items, min_size=0, max_size=len(value) + 2)
    return json_values | same_kind.get(type(value), json_values)


CONFIG_KEYS = {name: sorted({f.name for f in dataclasses.fields(config)}) for name, config in SMALL.items()}
METADATA_KEYS = ["format", "format_version", "architecture", "config", "training", "dataset", "camera",
                 "weight_dtype"]


# ----------------------------------------------------------------------------- checkpoints
@fast(200)
@given(which=st.sampled_from(["lite/float32", "gsgan/float16"]), data=st.data())
def test_any_config_value_loads_or_is_refused(scratch, which, data):
    """One to three config keys set to generated values (of the key's own kind, or any JSON), or an unknown key."""
    header, payload = split(original(which))
    config = json.loads(header["__metadata__"]["config"])
    keys = CONFIG_KEYS[which.split("/")[0]]
    for _ in range(data.draw(st.integers(1, 3), label="keys")):
        key = data.draw(st.sampled_from(keys) | st.text(max_size=6), label="key")
        config[key] = data.draw(near(config.get(key, 0)), label=f"value of {key}")
    header["__metadata__"]["config"] = json.dumps(config)
    scratch.write_bytes(join(header, payload))
    outcome(scratch)


@fast(200)
@given(which=st.sampled_from(["lite/float32", "gsgan/float32", "lite/float16"]), data=st.data())
def test_any_metadata_entry_loads_or_is_refused(scratch, which, data):
    """A metadata entry (or __metadata__ itself) replaced by any JSON, by JSON text of any JSON, or one field
    of training/dataset/camera set to a generated value."""
    header, payload = split(original(which))
    metadata = header["__metadata__"]
    kind = data.draw(st.sampled_from(["raw", "text", "field", "whole", "drop"]), label="kind")
    key = data.draw(st.sampled_from(METADATA_KEYS), label="key")
    if kind == "raw":  # not a string at all: safetensors' writer would refuse it, a hand-made file need not
        metadata[key] = data.draw(json_values, label="value")
    elif kind == "text":
        metadata[key] = json.dumps(data.draw(json_values, label="value"))
    elif kind == "field":
        part = data.draw(st.sampled_from(["training", "dataset", "camera"]), label="part")
        inner = json.loads(metadata[part])
        field = data.draw(st.sampled_from(sorted(inner) + ["kimg", "step", "render_supersample", "resolution",
                                                           "name"]) | st.text(max_size=6), label="field")
        inner[field] = data.draw(near(inner.get(field, 0)), label="value")
        metadata[part] = json.dumps(inner)
    elif kind == "whole":
        header["__metadata__"] = data.draw(json_values, label="__metadata__")
    else:
        del metadata[key]
    scratch.write_bytes(join(header, payload))
    outcome(scratch)


@fast(200)
@given(which=st.sampled_from(["lite/float32", "gsgan/float16"]), data=st.data())
def test_any_header_entry_loads_or_is_refused(scratch, which, data):
    """A tensor entry with a key removed or replaced (dtype, shape, data_offsets: generated, or near the real
    one), an entry removed, added or replaced by any JSON."""
    header, payload = split(original(which))
    names = sorted(k for k in header if k != "__metadata__")
    name = data.draw(st.sampled_from(names), label="tensor")
    entry = header[name]
    action = data.draw(st.sampled_from(["drop key", "set key", "shift", "remove", "add", "replace"]), label="action")
    if action == "drop key":
        del entry[data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]), label="key")]
    elif action == "set key":
        key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]) | st.text(max_size=6), label="key")
        choices = {"dtype": st.sampled_from(DTYPES), "shape": st.lists(st.integers(-2, 70), max_size=4),
                   "data_offsets": st.lists(st.integers(-2, len(payload) + 8), min_size=2, max_size=2)}
        entry[key] = data.draw(choices.get(key, json_values) | json_values, label="value")
    elif action == "shift":  # offsets moved by a little: overlaps, gaps, past the end
        delta = data.draw(st.integers(-16, 16).filter(bool), label="delta")
        index = data.draw(st.sampled_from([0, 1, None]), label="which offset")
        entry["data_offsets"] = [o + delta if index in (None, i) else o for i, o in enumerate(entry["data_offsets"])]
    elif action == "remove":
        del header[name]
    elif action == "add":
        header[data.draw(st.text(max_size=10), label="new name")] = data.draw(json_values, label="new entry")
    else:
        header[name] = data.draw(json_values, label="entry")
    scratch.write_bytes(join(header, payload))
    outcome(scratch)


@fast(150)
@given(which=st.sampled_from(sorted(["lite/float32", "lite/float16", "gsgan/float32", "gsgan/float16"])),
       data=st.data())
def test_truncated_lengthened_or_damaged_files_load_or_are_refused(scratch, which, data):
    """Cut at any length, bytes appended, or up to four bytes changed anywhere (header or weights)."""
    raw = bytearray(original(which))
    action = data.draw(st.sampled_from(["cut", "append", "flip", "flip header"]), label="action")
    if action == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    elif action == "append":
        raw += data.draw(st.binary(min_size=1, max_size=64), label="tail")
    else:
        (n,) = struct.unpack("<Q", bytes(raw[:8]))
        top = n + 8 if action == "flip header" else len(raw)
        for _ in range(data.draw(st.integers(1, 4), label="bytes")):
            raw[data.draw(st.integers(0, top - 1), label="at")] = data.draw(st.integers(0, 255), label="value")
    scratch.write_bytes(bytes(raw))
    result = outcome(scratch)
    if action in ("cut", "append"):
        assert result == "refused"


@fast(150)
@given(which=st.sampled_from(["lite/float32", "lite/float16", "gsgan/float16"]), data=st.data())
def test_a_relabelled_dtype_is_always_refused(scratch, which, data):
    """One to three tensors declared with another dtype: of the same size (the bytes still fit, the values
    would be garbage) or, with offsets and shape kept, of another size. Never loads."""
    header, payload = split(original(which))
    names = sorted(k for k in header if k != "__metadata__")
    count = data.draw(st.integers(1, 3), label="how many")
    for name in data.draw(st.permutations(names), label="tensors")[:count]:
        stored = header[name]["dtype"]
        same_size = [d for d in DTYPES if DTYPE_SIZES[d] == DTYPE_SIZES[stored] and d != stored]
        others = [d for d in DTYPES if d != stored]
        header[name]["dtype"] = data.draw(st.sampled_from(same_size) | st.sampled_from(others), label=f"dtype of {name}")
    scratch.write_bytes(join(header, payload))
    assert outcome(scratch) == "refused"


@pytest.mark.parametrize("which", ["lite/float32", "gsgan/float32"])
def test_extreme_finite_config_floats_load_and_run_or_are_refused(scratch, which):
    """Every float field of the config at large finite values (valid float32, so the type checks pass):
    `outcome` loads it and runs a forward pass, or it is refused. Drawn at random, these are rare."""
    header, payload = split(original(which))
    config = json.loads(header["__metadata__"]["config"])
    floats = [key for key, value in config.items() if isinstance(value, float)]
    assert len(floats) >= 4, floats
    tried = 0
    for key in floats:
        for value in (1e4, -1e4, 1e30, -1e30):
            header["__metadata__"]["config"] = json.dumps({**config, key: value})
            scratch.write_bytes(join(header, payload))
            outcome(scratch)
            tried += 1
    assert tried == 4 * len(floats)


@pytest.mark.parametrize("where", ["config", "training", "shape"])
def test_integers_too_long_for_python_are_refused(scratch, where):
    """json refuses integers of more than 4300 digits with a plain ValueError; the reader names the file."""
    header, payload = split(original("lite/float32"))
    marker = "987654321"  # put where the integer goes, then replaced in the text (json.dumps cannot write it)
    if where == "shape":
        name = next(k for k in header if k != "__metadata__")
        header[name]["shape"] = [int(marker)] + header[name]["shape"][1:]
    else:
        values = json.loads(header["__metadata__"][where])
        values[next(iter(values))] = int(marker)
        header["__metadata__"][where] = json.dumps(values)
    raw = json.dumps(header).encode().replace(marker.encode(), b"7" * 5000)
    scratch.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    for reader in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(CheckpointError, match=r"5000 digits"):
            reader(scratch)


def test_the_originals_load(scratch):
    for which in ("lite/float32", "lite/float16", "gsgan/float32", "gsgan/float16"):
        scratch.write_bytes(original(which))
        assert outcome(scratch) == "loaded"


# ----------------------------------------------------------------------------- numeric flags
number_texts = (st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.integers(-(2**70), 2**70).map(str)
                | st.floats(-3, 3).map(repr) | st.integers(-3, 5000).map(str)
                | st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e309", "0x10", "1_0", " 1", "", "--",
                                   "1,5", "½", "١"])
                | st.text(max_size=6))

FLAGS = {  # flag -> (command, valid range as parse_number reads it)
    ("gsgan-render", "--psi"): arguments.PSI_RANGE,
    ("gsgan-render", "--fps"): arguments.FPS_RANGE,
    ("gsgan-render", "--pitch"): (-arguments.PITCH_LIMIT, arguments.PITCH_LIMIT),
    ("gsgan-render", "--frames"): (1, None),
    ("gsgan-render", "--resolution"): RESOLUTION_RANGE,
    ("gsgan-export", "--psi"): arguments.PSI_RANGE,
    ("gsgan-export", "--seed"): (0, arguments.MAX_SEED),
    ("gsgan-metrics", "--num"): (1, None),
    ("gsgan-metrics", "--seed"): (0, arguments.MAX_SEED),
}
MAINS = {"gsgan-render": render_main, "gsgan-export": export_main, "gsgan-metrics": metrics_main}


def _in_range(text: str, low, high, open_low: bool, integer: bool) -> bool:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        return False
    if not math.isfinite(value):
        return False
    return (low is None or (value > low if open_low else value >= low)) and (high is None or value <= high)


@fast(300)
@given(flag=st.sampled_from(sorted(FLAGS)), text=number_texts)
def test_any_numeric_flag_is_checked_before_any_work(tmp_path_factory, capsys, flag, text):
    """With a checkpoint that does not exist: a flag out of range must be named (status 1, one line) or refused
    by argparse (status 2); a flag in range goes on to the next check, which says the file is not found."""
    prog, name = flag
    folder = tmp_path_factory.getbasetemp() / "flags"
    missing = folder / "missing.safetensors"
    args = {"gsgan-render": [str(missing), "--out", str(folder / "a.png")],
            "gsgan-export": [str(missing), "--out", str(folder / "a.ply")],
            "gsgan-metrics": ["--network", str(missing), "--data", str(folder / "missing.zip")]}[prog]
    try:
        status = MAINS[prog]([*args, f"{name}={text}"])
    except SystemExit as stop:  # argparse: not a number at all
        status = stop.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    low, high = FLAGS[flag]
    integer = name in ("--frames", "--resolution", "--seed", "--num")
    if status == 2:
        note("refused by argparse")
        assert f"argument {name}: invalid" in err
        return
    assert status == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    if _in_range(text, low, high, name == "--fps", integer):
        note("in range")
        assert "missing.safetensors: file not found" in lines[0], err
    else:
        note("out of range")
        assert name in lines[0] or "resolution" in lines[0], err


@fast(300)
@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70) | st.text(max_size=6),
       low=st.none() | st.floats(-10, 10), span=st.none() | st.floats(0, 10), low_open=st.booleans(),
       integer=st.booleans())
def test_parse_number_returns_a_finite_number_in_range_or_names_the_flag(value, low, span, low_open, integer):
    high = None if span is None else (low or 0.0) + span
    try:
        result = arguments.parse_number(value, "--x", low, high, low_open=low_open, integer=integer)
    except ConfigError as err:
        assert str(err).startswith("--x must be ") and "\n" not in str(err)
        return
    assert math.isfinite(result)
    assert low is None or (result > low if low_open else result >= low)
    assert high is None or result <= high
    assert not integer or isinstance(result, int)
