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
        "badconfig": (lambda m: m.update(config=json.dumps({"channels": "many"})), "not a valid generator config"),
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
    EqualLinear ones would learn at sqrt(fan_in) times the rate (the run 2 collapse of the fine levels)."""
    from torch import nn

    plain = [name for name, m in generator.named_modules() if isinstance(m, nn.Linear)]
    # the Fourier-feature inputs (3 -> C, sin) keep nn.Linear: their init sets the frequencies
    assert all(name.endswith(("encoder.fourier", "view_embed")) for name in plain), plain
