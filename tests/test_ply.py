import os

import numpy as np
import pytest
import torch

from gsgan_core.errors import PlyError
from gsgan_core.gaussians import Gaussians
from gsgan_core.io import ply
from gsgan_core.io.ply import STANDARD_PROPERTIES, read_ply, write_ply


def random_hierarchy(levels=3, roots=5, seed=0, batch=()):
    """Level 0 has `roots` Gaussians, each level 4 children per parent; plus 2 background ones."""
    g = torch.Generator().manual_seed(seed)
    level, parent = [], []
    start, count = 0, roots
    for lvl in range(levels):
        level += [lvl] * count
        parent += [-1] * count if lvl == 0 else [start - count // 4 + i // 4 for i in range(count)]
        start += count
        count *= 4
    level += [-1, -1]
    parent += [-1, -1]
    n = len(level)
    return Gaussians(
        means=torch.randn(*batch, n, 3, generator=g),
        log_scales=torch.randn(*batch, n, 3, generator=g) - 3,
        quats=torch.randn(*batch, n, 4, generator=g),
        opacity_logits=torch.randn(*batch, n, generator=g),
        sh_dc=torch.randn(*batch, n, 3, generator=g),
        level=torch.tensor(level),
        parent=torch.tensor(parent),
    )


def header_of(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii").splitlines(), data[end:]


def assert_same(a: Gaussians, b: Gaussians):
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "level", "parent"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        assert torch.equal(x, y), name


def craft(path, header_lines, body=b""):
    path.write_bytes(("\n".join(header_lines) + "\n").encode("ascii") + body)
    return path


def standard_header(n=2, props=STANDARD_PROPERTIES, fmt="binary_little_endian 1.0", element="vertex"):
    return ["ply", f"format {fmt}", f"element {element} {n}"] + [f"property float {p}" for p in props] + ["end_header"]


# ----------------------------------------------------------------------------- round trip
def test_round_trip_is_bit_exact(tmp_path):
    g = random_hierarchy()
    write_ply(tmp_path / "scene.ply", g)
    back = read_ply(tmp_path / "scene.ply")
    assert_same(g, back)
    assert back.means.dtype == torch.float32 and back.level.dtype == torch.int64
    # the hierarchy still works after the trip
    assert back.ancestor(len(back) - 3, 0) == g.ancestor(len(g) - 3, 0)


def test_selection_round_trip(tmp_path):
    g = random_hierarchy().up_to_level(1)
    write_ply(tmp_path / "coarse.ply", g)
    assert_same(g, read_ply(tmp_path / "coarse.ply"))


def test_float64_and_grad_inputs_are_written_as_float32(tmp_path):
    g = random_hierarchy()
    g64 = g.to(torch.float64)
    g64.means.requires_grad_(True)
    write_ply(tmp_path / "a.ply", g64)
    assert_same(g, read_ply(tmp_path / "a.ply"))


def test_header_layout(tmp_path):
    g = random_hierarchy()
    write_ply(tmp_path / "h.ply", g)
    lines, body = header_of(tmp_path / "h.ply")
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", f"element vertex {len(g)}"]
    props = [line.split() for line in lines if line.startswith("property")]
    assert [p[2] for p in props] == list(STANDARD_PROPERTIES) + ["level", "parent"]
    assert all(p[1] == "float" for p in props[:17]) and all(p[1] == "int" for p in props[17:])
    assert lines[-1] == "end_header"
    assert len(body) == len(g) * (17 * 4 + 2 * 4)
    # normals are zero, opacity is stored as the logit, rot is (w, x, y, z)
    first = np.frombuffer(body[: 19 * 4], dtype="<f4")
    assert (first[3:6] == 0).all()
    assert first[9] == g.opacity_logits[0].item()
    assert (first[13:17] == g.quats[0].numpy()).all()

    write_ply(tmp_path / "plain.ply", g, hierarchy=False)
    lines, body = header_of(tmp_path / "plain.ply")
    assert [line.split()[2] for line in lines if line.startswith("property")] == list(STANDARD_PROPERTIES)
    assert len(body) == len(g) * 17 * 4


def test_file_without_hierarchy_reads_as_flat(tmp_path):
    g = random_hierarchy()
    write_ply(tmp_path / "plain.ply", g, hierarchy=False)
    back = read_ply(tmp_path / "plain.ply")
    assert torch.equal(back.level, torch.zeros(len(g), dtype=torch.long))
    assert torch.equal(back.parent, torch.full((len(g),), -1, dtype=torch.long))
    assert torch.equal(back.means, g.means)


def test_extra_properties_are_ignored(tmp_path):
    # a typical 3DGS training output: normals, f_dc, 45 f_rest, opacity, scales, rots; plus a uchar
    props = list(STANDARD_PROPERTIES[:9]) + [f"f_rest_{i}" for i in range(45)] + list(STANDARD_PROPERTIES[9:])
    n = 3
    dtype = [(p, "<f4") for p in props] + [("red", "u1")]
    records = np.zeros(n, dtype=dtype)
    for i, p in enumerate(props):
        records[p] = np.arange(n) + 100 * i
    header = ["ply", "format binary_little_endian 1.0", "comment made by a test", f"element vertex {n}"]
    header += [f"property float {p}" for p in props] + ["property uchar red", "end_header"]
    back = read_ply(craft(tmp_path / "3dgs.ply", header, records.tobytes()))
    assert torch.equal(back.means[:, 0], torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(back.quats[:, 3], torch.from_numpy(records["rot_3"].copy()))
    assert torch.equal(back.opacity_logits, torch.from_numpy(records["opacity"].copy()))
    assert torch.equal(back.level, torch.zeros(n, dtype=torch.long))


def test_empty_scene(tmp_path):
    g = random_hierarchy().select(torch.zeros(0, dtype=torch.long))
    write_ply(tmp_path / "empty.ply", g)
    back = read_ply(tmp_path / "empty.ply")
    assert len(back) == 0 and back.means.shape == (0, 3)


def test_batched_gaussians_are_refused(tmp_path):
    g = random_hierarchy(batch=(2,))
    with pytest.raises(PlyError, match="scene"):
        write_ply(tmp_path / "batch.ply", g)
    assert not (tmp_path / "batch.ply").exists()
    write_ply(tmp_path / "one.ply", g.scene(1))
    assert torch.equal(read_ply(tmp_path / "one.ply").means, g.means[1])


# ----------------------------------------------------------------------------- errors
def read_error(path) -> str:
    with pytest.raises(PlyError) as info:
        read_ply(path)
    assert info.value.path == str(path)
    return info.value.problem


def test_not_a_ply(tmp_path):
    (tmp_path / "x.ply").write_bytes(b"\x89PNG\r\n\x1a\n junk")
    assert "not a PLY" in read_error(tmp_path / "x.ply")
    (tmp_path / "empty.ply").write_bytes(b"")
    assert "not a PLY" in read_error(tmp_path / "empty.ply")


def test_missing_file(tmp_path):
    assert "cannot read" in read_error(tmp_path / "nope.ply")


def test_ascii_and_big_endian_are_named(tmp_path):
    problem = read_error(craft(tmp_path / "a.ply", standard_header(fmt="ascii 1.0"), b"0 " * 34))
    assert "ASCII" in problem
    problem = read_error(craft(tmp_path / "b.ply", standard_header(fmt="binary_big_endian 1.0"), bytes(8 * 17)))
    assert "big-endian" in problem


def test_no_vertex_element(tmp_path):
    problem = read_error(craft(tmp_path / "f.ply", standard_header(element="face"), bytes(8 * 17)))
    assert "vertex" in problem


def test_missing_property_is_named(tmp_path):
    props = [p for p in STANDARD_PROPERTIES if p != "rot_2"]
    problem = read_error(craft(tmp_path / "m.ply", standard_header(props=props), bytes(8 * 16)))
    assert "rot_2" in problem


def test_truncated_data(tmp_path):
    write_ply(tmp_path / "t.ply", random_hierarchy())
    data = (tmp_path / "t.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[:-5])
    assert "truncated" in read_error(tmp_path / "t.ply")
    # cut inside the header
    (tmp_path / "h.ply").write_bytes(data[:40])
    assert "end_header" in read_error(tmp_path / "h.ply")


def test_out_of_range_parent(tmp_path):
    g = random_hierarchy()
    g.parent[3] = len(g) + 10
    write_ply(tmp_path / "p.ply", g)
    assert "parent" in read_error(tmp_path / "p.ply")


# ----------------------------------------------------------------------------- atomicity
def test_atomic_write_leaves_no_temp_file(tmp_path):
    write_ply(tmp_path / "scene.ply", random_hierarchy())
    write_ply(tmp_path / "scene.ply", random_hierarchy(seed=1))  # overwrite too
    assert sorted(os.listdir(tmp_path)) == ["scene.ply"]
    assert_same(read_ply(tmp_path / "scene.ply"), random_hierarchy(seed=1))


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "scene.ply"
    write_ply(target, random_hierarchy())
    before = target.read_bytes()

    class Boom(Exception):
        pass

    real_open = open

    class FailingFile:
        def __init__(self, path, mode):
            self.f = real_open(path, mode)
            self.writes = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.writes += 1
            if self.writes == 2:  # after the header, half the data, then failure
                self.f.write(data[: len(data) // 2])
                raise Boom("disk full")
            return self.f.write(data)

    monkeypatch.setattr(ply, "open", FailingFile, raising=False)
    with pytest.raises(Boom):
        write_ply(target, random_hierarchy(seed=5))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["scene.ply"]


def test_missing_dir_raises_and_creates_nothing(tmp_path):
    with pytest.raises(OSError):
        write_ply(tmp_path / "no" / "such" / "dir.ply", random_hierarchy())
    assert os.listdir(tmp_path) == []


def test_refused_temp_file_keeps_the_old_file(tmp_path, monkeypatch):
    # what an unwritable folder does, simulated so that it also runs as root
    target = tmp_path / "scene.ply"
    write_ply(target, random_hierarchy())
    before = target.read_bytes()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("gsgan_core.io.atomic.tempfile.mkstemp", refuse)
    with pytest.raises(PermissionError):
        write_ply(target, random_hierarchy(seed=5))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["scene.ply"]
