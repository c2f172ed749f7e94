import json
import pickle
import os
import stat
import struct

import pytest
import torch
from conftest import random_generator
from safetensors.torch import save_file

from gsgan_core.cameras import OrbitPose
from gsgan_core.errors import CheckpointError
from gsgan_core.io import checkpoint as ckpt
from gsgan_core.io.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from gsgan_core.models.generator import z_from_seeds


@pytest.fixture(scope="module")
def generator():
    return random_generator("tiny", seed=4)


@pytest.fixture
def saved(tmp_path, generator):
    path = tmp_path / "g.safetensors"
    save_checkpoint(
        path,
        generator,
        training={"kimg": 12.5, "step": 400},
        dataset={"name": "heads", "resolution": 64},
        camera=OrbitPose(radius=3.0, fov_deg=20.0),
    )
    return path


def _render_free_output(generator, seed=3):
    with torch.no_grad():
        return generator(z_from_seeds([seed], generator.config.z_dim), psi=0.7)


def test_round_trip_rebuilds_the_generator_from_the_file_alone(saved, generator):
    loaded, info = load_checkpoint(saved)
    assert info.config == generator.config
    assert info.kimg == 12.5 and info.training["step"] == 400
    assert info.dataset == {"name": "heads", "resolution": 64} and info.resolution == 64
    assert info.camera == OrbitPose(radius=3.0, fov_deg=20.0)
    assert not loaded.training
    a, b = _render_free_output(generator), _render_free_output(loaded)
    assert torch.equal(a.means, b.means) and torch.equal(a.sh_dc, b.sh_dc)
    torch.testing.assert_close(loaded.mapping.w_avg, generator.mapping.w_avg, rtol=0, atol=0)


def test_float16_file_is_smaller_and_loads_as_float32(tmp_path, generator, saved):
    path = tmp_path / "half.safetensors"
    save_checkpoint(path, generator, weight_dtype=torch.float16)
    assert path.stat().st_size < 0.6 * saved.stat().st_size
    loaded, info = load_checkpoint(path)
    assert info.weight_dtype == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    a, b = _render_free_output(generator), _render_free_output(loaded)
    torch.testing.assert_close(a.means, b.means, rtol=0, atol=5e-3)


def test_info_is_readable_without_the_weights(saved):
    info = read_checkpoint_info(saved)
    assert info.config.num_levels == 4 and info.kimg == 12.5


def test_write_is_atomic(tmp_path, generator, saved, monkeypatch):
    before = saved.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(saved, generator)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]  # no temp file left


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="file not found") as err:
        load_checkpoint(tmp_path / "nope.safetensors")
    assert "nope.safetensors" in str(err.value)


class _Trap:
    """Unpickling this would create a file: proof that the loader never unpickles."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_are_refused_and_never_unpickled(tmp_path, generator):
    marker = tmp_path / "UNPICKLED"
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Trap(str(marker))))
    archive = tmp_path / "torch.pt"
    torch.save(generator.state_dict(), archive)
    for path in (raw, archive):
        with pytest.raises(CheckpointError, match="pickle") as err:
            load_checkpoint(path)
        assert str(path) in str(err.value)
    assert not marker.exists()


def test_truncated_file(tmp_path, saved):
    cut = tmp_path / "cut.safetensors"
    data = saved.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)
    cut.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="too short"):
        load_checkpoint(cut)


def test_garbage_file(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(struct.pack("<Q", 16) + b"this is not json" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="not JSON"):
        load_checkpoint(path)
    path.write_bytes(b"hello world, definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)


def _rewrite(path, out, edit_tensors=None, edit_metadata=None):
    """Copies a checkpoint through safetensors, editing tensors or metadata on the way."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_metadata:
        edit_metadata(metadata)
    save_file(tensors, str(out), metadata=metadata)
    return out


def test_missing_unexpected_and_misshapen_tensors(tmp_path, saved):
    name = "levels.0.render_head.geometry.weight"
    bad = _rewrite(saved, tmp_path / "missing.safetensors", edit_tensors=lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=f"missing tensors .*{name}"):
        load_checkpoint(bad)
    bad = _rewrite(saved, tmp_path / "extra.safetensors", edit_tensors=lambda t: t.update(stowaway=torch.zeros(2)))
    with pytest.raises(CheckpointError, match="unexpected tensors .*stowaway"):
        load_checkpoint(bad)
    bad = _rewrite(saved, tmp_path / "shape.safetensors", edit_tensors=lambda t: t.update({name: torch.zeros(3, 3)}))
    with pytest.raises(CheckpointError, match=f"'{name}' has shape \\[3, 3\\]"):
        load_checkpoint(bad)


def test_metadata_problems(tmp_path, saved):
    cases = {
        "version": (lambda m: m.update(format_version="99"), "format version 99"),
        "nometa": (lambda m: m.pop("camera"), "missing \\['camera'\\]"),
        "notgsgan": (lambda m: m.pop("format"), "not a gsgan generator checkpoint"),
        "badjson": (lambda m: m.update(training="{oops"), "'training' is not valid JSON"),
        "badconfig": (lambda m: m.update(config=json.dumps({"channels": "many"})), "'config': channels must be a list"),
        "badrange": (lambda m: m.update(config=json.dumps({"num_heads": 3})), "not a valid generator config"),
        "badcamera": (lambda m: m.update(camera=json.dumps({"yaw": 0})), "'camera' is invalid"),
    }
    for name, (edit, message) in cases.items():
        bad = _rewrite(saved, tmp_path / f"{name}.safetensors", edit_metadata=edit)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(bad)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(CheckpointError, match="not a gsgan generator checkpoint"):
        read_checkpoint_info(plain)


def test_written_file_has_the_umask_mode_not_mkstemps_0600(tmp_path, generator):
    old = os.umask(0o022)
    try:
        path = tmp_path / "shared.safetensors"
        save_checkpoint(path, generator)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_version_1_file_loads_as_the_same_generator(tmp_path, saved, generator):
    """Version 1 stored plain nn.Linear weights (W) for the synthesis layers; EqualLinear computes with
    weight * gain. A v1 file written from the same generator's effective weights must load to it exactly."""
    from gsgan_core.models.layers import EqualLinear

    converted = []

    def effective_weights(tensors):
        for name, module in generator.named_modules():
            if isinstance(module, EqualLinear) and not (name.startswith("mapping.") or name.endswith(".affine")):
                tensors[f"{name}.weight"] = tensors[f"{name}.weight"] * module.weight_gain
                converted.append(name)

    v1 = _rewrite(
        saved,
        tmp_path / "v1.safetensors",
        edit_tensors=effective_weights,
        edit_metadata=lambda m: m.update(format_version="1"),
    )
    assert "levels.1.render_head.geometry" in converted and "levels.0.blocks.0.attn.qkv" in converted
    loaded, info = load_checkpoint(v1)
    assert info.format_version == 1
    expected, got = _render_free_output(generator), _render_free_output(loaded)
    for field in ("means", "log_scales", "quats", "opacity_logits", "sh_dc"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), rtol=1e-5, atol=1e-5)
    # read as version 2 (no conversion), the same tensors make a different generator: the conversion matters
    as_v2 = _rewrite(v1, tmp_path / "v1-as-v2.safetensors", edit_metadata=lambda m: m.update(format_version="2"))
    assert not torch.allclose(_render_free_output(load_checkpoint(as_v2)[0]).means, expected.means)


def test_every_linear_layer_of_the_synthesis_network_is_equalised(generator):
    """Adam's step is about lr per weight whatever the weight's scale; plain nn.Linear layers next to
    EqualLinear ones would learn at sqrt(fan_in) times the rate, enough to wreck the fine levels."""
    from torch import nn

    plain = [name for name, m in generator.named_modules() if isinstance(m, nn.Linear)]
    # the Fourier-feature inputs (3 -> C, sin) keep nn.Linear: their init sets the frequencies
    assert all(name.endswith(("encoder.fourier", "view_embed")) for name in plain), plain


# ----------------------------------------------------------------------------- hostile headers and metadata
def _edit_header(path, out, edit):
    """Copies a checkpoint with its JSON header edited as plain JSON (types safetensors' writer would refuse)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    out.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return out


def _set_json(key, field, value):  # metadata[key] is JSON text: set one field inside it
    def edit(header):
        inner = json.loads(header["__metadata__"][key])
        inner[field] = value
        header["__metadata__"][key] = json.dumps(inner)

    return edit


def _assert_refused(path, *words):
    """Both readers refuse the file with a CheckpointError naming the file and each of `words`."""
    for reader in (load_checkpoint, read_checkpoint_info):
        with pytest.raises(CheckpointError) as caught:
            reader(path)
        message = str(caught.value)
        assert str(path) in message and all(w in message for w in words) and "\n" not in message, message


@pytest.mark.parametrize("edit, words", [
    (_set_json("training", "kimg", None), ["'training'", "kimg", "null"]),
    (_set_json("training", "step", "400"), ["'training'", "step", "integer"]),
    (_set_json("training", "render_supersample", 0), ["render_supersample", "at least 1"]),
    (_set_json("dataset", "name", {"a": 1}), ["'dataset'", "name", "string"]),
    (_set_json("dataset", "resolution", None), ["'dataset'", "resolution"]),
    (_set_json("config", "z_dim", "128"), ["'config'", "z_dim", "integer"]),
    (_set_json("config", "z_dim", 128.0), ["'config'", "z_dim", "integer"]),
    (_set_json("config", "split_ratio", None), ["'config'", "split_ratio", "number"]),
    (_set_json("config", "background", 1), ["'config'", "background", "true or false"]),
    (_set_json("config", "attention", ["global", 3, "local", "local"]), ["attention[1]", "string"]),
    (_set_json("config", "num_heads", 0), ["'config'", "num_heads"]),
    (_set_json("config", "channels", [64, -64, 32, 32]), ["'config'", "channels"]),
    (_set_json("config", "up_ratio", 0), ["'config'", "up_ratio"]),
    (_set_json("config", "mapping_layers", 10**9), ["'config'", "mapping_layers"]),
    (_set_json("camera", "pivot", None), ["'camera'", "pivot"]),
    (_set_json("camera", "yaw", "0"), ["'camera'", "yaw", "number"]),  # every OrbitPose field is type-checked
    (_set_json("camera", "fov_deg", None), ["'camera'", "fov_deg", "null"]),
    # found by tests/test_fuzz_checkpoint.py:
    (_set_json("camera", "pivot", [0, 0, 10**400]), ["'camera'", "pivot[2]", "finite"]),  # was OverflowError
    (_set_json("config", "background_radius", 1e-300), ["'config'", "background_radius", "float32"]),  # log(0)
    (_set_json("config", "background_radius", 1e300), ["'config'", "background_radius", "float32"]),  # overflow
    (_set_json("config", "bad\nkey", 1), ["'config'", "bad\\nkey"]),  # a newline made the message two lines
    (lambda h: h["__metadata__"].update(config="[1, 2]"), ["'config'", "JSON object", "list"]),
    (lambda h: h["__metadata__"].update(format_version=2), ["format_version", "string"]),
    (lambda h: h["__metadata__"].update(architecture={"x": 1}), ["architecture", "string"]),
    (lambda h: h["__metadata__"].update(weight_dtype=None), ["weight_dtype", "string"]),
    (lambda h: h.update(__metadata__=[1, 2]), ["__metadata__", "JSON object"]),
])
def test_metadata_of_the_wrong_type_or_range_is_refused_naming_the_field(tmp_path, saved, edit, words):
    _assert_refused(_edit_header(saved, tmp_path / "bad.safetensors", edit), *words)


def test_official_architecture_configs_are_checked_too(tmp_path):
    from gsgan_core.models import build_generator
    from gsgan_core.models.config import preset

    torch.manual_seed(0)
    path = tmp_path / "official.safetensors"
    save_checkpoint(path, build_generator(preset("gsgan-tiny")))
    assert load_checkpoint(path)[1].config.architecture == "gsgan"
    for field, value in (("num_heads", 0), ("channels", [32, -32, 16, 16]), ("background_channels", -16),
                         ("pe_res", 0), ("knn_k", None), ("xyz_output_scale", "0.1"), ("mapping_layers", 0),
                         ("scale_init", 1e300)):  # (the last was RuntimeError from torch.full, found by fuzzing)
        _assert_refused(_edit_header(path, tmp_path / f"{field}.safetensors", _set_json("config", field, value)),
                        "'config'", field)


@pytest.mark.parametrize("edit, words", [
    (lambda h: h["mapping.w_avg"].pop("shape"), ["'mapping.w_avg'", "'shape'"]),
    (lambda h: h["mapping.w_avg"].pop("data_offsets"), ["'mapping.w_avg'", "'data_offsets'"]),
    (lambda h: h["mapping.w_avg"].pop("dtype"), ["'mapping.w_avg'", "'dtype'"]),
    (lambda h: h["mapping.w_avg"].update(shape="64"), ["'mapping.w_avg'", "'shape'"]),
    (lambda h: h["mapping.w_avg"].update(shape=[None]), ["'mapping.w_avg'", "'shape'"]),
    (lambda h: h["mapping.w_avg"].update(data_offsets={"a": 1}), ["'mapping.w_avg'", "'data_offsets'"]),
    (lambda h: h["mapping.w_avg"].update(data_offsets=[5, 1]), ["'mapping.w_avg'", "'data_offsets'"]),
    (lambda h: h["mapping.w_avg"].update(dtype="F99"), ["'mapping.w_avg'", "'dtype'"]),
    (lambda h: h["mapping.w_avg"].update(dtype=[]), ["'mapping.w_avg'", "'dtype'"]),
    (lambda h: h["mapping.w_avg"].update(shape=[32]), ["'mapping.w_avg'", "'data_offsets'"]),
    (lambda h: h.update({"mapping.w_avg": None}), ["'mapping.w_avg'", "JSON object"]),
])
def test_malformed_header_entries_are_refused_naming_the_tensor(tmp_path, saved, edit, words):
    _assert_refused(_edit_header(saved, tmp_path / "bad.safetensors", edit), *words)


def _relabel(name, dtype):
    return lambda h: h[name].update(dtype=dtype)


@pytest.mark.parametrize("declared", ["BF16", "I16", "U16"])
def test_a_relabelled_dtype_is_refused(tmp_path, generator, declared):
    """F16 bytes declared as another 2-byte type would load as garbage weights: the stored dtype must be
    what the metadata's weight_dtype says was saved."""
    half = tmp_path / "half.safetensors"
    save_checkpoint(half, generator, weight_dtype=torch.float16)
    name = "levels.0.render_head.geometry.weight"
    bad = _edit_header(half, tmp_path / "relabelled.safetensors", _relabel(name, declared))
    with pytest.raises(CheckpointError, match=f"'{name}' is stored as {declared}.*float16.*F16") as caught:
        load_checkpoint(bad)
    assert str(bad) in str(caught.value)
    # an F32 file that claims to be float16 is refused too (same shapes, other bytes per value)
    full = tmp_path / "full.safetensors"
    save_checkpoint(full, generator)
    claims_half = _edit_header(full, tmp_path / "claims.safetensors", lambda h: h["__metadata__"].update(
        weight_dtype="float16"))
    with pytest.raises(CheckpointError, match="is stored as F32"):
        load_checkpoint(claims_half)


def test_integer_buffers_keep_their_dtype(tmp_path):
    from gsgan_core.models import build_generator
    from gsgan_core.models.config import preset

    torch.manual_seed(0)
    path = tmp_path / "official.safetensors"
    save_checkpoint(path, build_generator(preset("gsgan-tiny")), weight_dtype=torch.float16)
    load_checkpoint(path)  # F16 weights and I64 rotation_init: as saved
    for declared in ("F64", "U64"):
        bad = _edit_header(path, tmp_path / "rot.safetensors", _relabel("point_gen.rotation_init", declared))
        with pytest.raises(CheckpointError, match=f"'point_gen.rotation_init' is stored as {declared}.*I64"):
            load_checkpoint(bad)


def test_non_finite_weights_are_refused(tmp_path, saved):
    name = "levels.0.render_head.geometry.weight"
    for value in (float("nan"), float("inf")):
        def poison(tensors):
            tensors[name] = tensors[name].clone()
            tensors[name].view(-1)[3] = value

        bad = _rewrite(saved, tmp_path / "nan.safetensors", edit_tensors=poison)
        with pytest.raises(CheckpointError, match=f"'{name}' holds 1 values? that (is|are) not finite") as caught:
            load_checkpoint(bad)
        assert str(bad) in str(caught.value)


def test_a_folder_is_named_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint_info(tmp_path)


def test_trailing_bytes_and_overlapping_tensors_are_refused(tmp_path, saved):
    longer = tmp_path / "longer.safetensors"
    longer.write_bytes(saved.read_bytes() + b"\0" * 4)
    _assert_refused(longer, "4 bytes after its last tensor")

    def overlap(header):
        entries = sorted((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")
        (_, first), (_, second) = entries[:2]
        header[first], header[second] = dict(header[first]), dict(header[second])
        header[second]["data_offsets"] = [0, header[second]["data_offsets"][1] - header[second]["data_offsets"][0]]
    _assert_refused(_edit_header(saved, tmp_path / "overlap.safetensors", overlap), "'data_offsets'")


def test_the_explorer_engine_keeps_its_model_when_a_bad_file_is_opened(tmp_path, generator):
    """The explorer catches GsganError; every bad file must raise one, and the good model must stay."""
    from gsgan_core.view.engine import interactive_engine

    good = tmp_path / "good.safetensors"
    save_checkpoint(good, generator, weight_dtype=torch.float16)
    name = "levels.0.render_head.geometry.weight"
    bad = [_edit_header(good, tmp_path / "bf16.safetensors", _relabel(name, "BF16")),
           _edit_header(good, tmp_path / "heads.safetensors", _set_json("config", "num_heads", 0)),
           _edit_header(good, tmp_path / "null.safetensors", _set_json("training", "kimg", None)),
           _edit_header(good, tmp_path / "list.safetensors", lambda h: h.update(__metadata__=[1]))]
    engine = interactive_engine(torch.device("cpu"))
    engine.load(good)
    loaded = engine.generator
    for path in bad:
        with pytest.raises(CheckpointError, match=str(path.name)):
            engine.load(path)
        assert engine.generator is loaded and engine.info.path == str(good)


def test_long_runs_and_unknown_fields_still_load(tmp_path, generator):
    """The checks refuse what is wrong, not what is merely large or new: a run of 30 million steps, extra
    fields written by a later gsgan."""
    path = tmp_path / "long.safetensors"
    save_checkpoint(path, generator, training={"kimg": 250_000.0, "step": 30_000_000, "future": [1, {"a": None}]},
                    dataset={"name": "ffhq", "resolution": 64, "sha": "abc"})
    info = load_checkpoint(path)[1]
    assert info.training["step"] == 30_000_000 and info.kimg == 250_000.0 and info.dataset["sha"] == "abc"
