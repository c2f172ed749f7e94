"""3D Gaussian splat PLY files in the standard 3DGS layout, plus optional hierarchy columns.

Layout written (binary_little_endian, one `vertex` element, float32 properties in this order):

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

values unactivated as 3DGS stores them (opacity logits, log-scales, rot = w, x, y, z; normals
zero), then, for a hierarchy, `int level` and `int parent`. Common splat viewers ignore
properties they do not know, so the file still opens everywhere.

Parsed by hand with numpy structured arrays: no plyfile dependency and nothing is ever
unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import PlyError
from ..gaussians import Gaussians
from .atomic import atomic_path

STANDARD_PROPERTIES = (
    "x", "y", "z",
    "nx", "ny", "nz",
    "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity",
    "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip
HIERARCHY_PROPERTIES = ("level", "parent")
# Everything but the normals is needed to rebuild a Gaussian.
REQUIRED_PROPERTIES = tuple(name for name in STANDARD_PROPERTIES if name not in ("nx", "ny", "nz"))

# PLY scalar type names (both spellings of the spec) -> little-endian numpy dtypes.
_PLY_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2",
    "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4",
    "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4",
    "double": "<f8", "float64": "<f8",
}  # fmt: skip
_MAX_HEADER_BYTES = 1 << 20  # a real header is a few hundred bytes; stop reading junk early


# --------------------------------------------------------------------------- writing
def _vertex_records(gaussians: Gaussians, hierarchy: bool) -> np.ndarray:  # [N] structured
    """The Gaussians as one structured numpy row per Gaussian, in file order."""
    n = gaussians.num_gaussians

    def as_numpy(t: torch.Tensor, width: int | None) -> np.ndarray:
        array = t.detach().to("cpu", torch.float32).numpy()
        return array.reshape(n, width) if width is not None else array.reshape(n)

    columns: dict[str, np.ndarray] = {}
    for axis, name in enumerate("xyz"):
        columns[name] = as_numpy(gaussians.means, 3)[:, axis]
    for name in ("nx", "ny", "nz"):
        columns[name] = np.zeros(n, np.float32)
    for c in range(3):
        columns[f"f_dc_{c}"] = as_numpy(gaussians.sh_dc, 3)[:, c]
    columns["opacity"] = as_numpy(gaussians.opacity_logits, None)
    for c in range(3):
        columns[f"scale_{c}"] = as_numpy(gaussians.log_scales, 3)[:, c]
    for c in range(4):
        columns[f"rot_{c}"] = as_numpy(gaussians.quats, 4)[:, c]

    dtype = [(name, "<f4") for name in STANDARD_PROPERTIES]
    if hierarchy:
        for name in HIERARCHY_PROPERTIES:
            values = getattr(gaussians, name).detach().cpu().numpy().reshape(n)
            columns[name] = values.astype("<i4")  # indices and levels are far below 2**31
        dtype += [(name, "<i4") for name in HIERARCHY_PROPERTIES]

    records = np.empty(n, dtype=dtype)
    for name, values in columns.items():
        records[name] = values
    return records


def _header(records: np.ndarray) -> bytes:
    type_names = {np.dtype("<f4"): "float", np.dtype("<i4"): "int"}
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {len(records)}"]
    lines += [f"property {type_names[records.dtype[name]]} {name}" for name in records.dtype.names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(path: str | os.PathLike, gaussians: Gaussians, hierarchy: bool = True) -> None:
    """Writes one scene of Gaussians ([N, ...], no batch dims) as a 3DGS PLY file, atomically.

    With `hierarchy` the `level` and `parent` columns are added. To export a selection,
    select first (e.g. `gaussians.up_to_level(2)`); to export one scene of a batch, pass
    `gaussians.scene(i)`. Raises PlyError for batched input, OSError if `path` is not writable;
    an existing file at `path` is only replaced once the new one is completely written.
    """
    if len(gaussians.batch_shape) != 0:
        raise PlyError(
            path,
            f"a PLY file holds one scene, got a batch of shape {tuple(gaussians.batch_shape)}; "
            "pass gaussians.scene(i)",
        )
    records = _vertex_records(gaussians, hierarchy)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(_header(records))
        f.write(records.tobytes())


# --------------------------------------------------------------------------- reading
class _Element:
    def __init__(self, name: str, count: int):
        self.name = name
        self.count = count
        self.properties: list[tuple[str, str]] = []  # (name, numpy dtype)
        self.has_list = False

    def dtype(self) -> np.dtype:
        return np.dtype(self.properties)


def _read_header(f, path) -> list[_Element]:
    magic = f.readline(16)
    if magic.rstrip(b"\r\n") != b"ply":
        raise PlyError(path, "not a PLY file (it does not start with 'ply')")
    elements: list[_Element] = []
    format_seen = False
    read = len(magic)
    while True:
        raw = f.readline(_MAX_HEADER_BYTES)
        read += len(raw)
        # a last line without its newline means the file stops inside the header
        if not raw.endswith(b"\n") or read > _MAX_HEADER_BYTES:
            raise PlyError(path, "the PLY header never ends (no 'end_header' line)")
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise PlyError(path, "the PLY header is not ASCII text") from None
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        keyword = words[0]
        if keyword == "end_header":
            break
        if keyword == "format":
            fmt = words[1] if len(words) > 1 else ""
            if fmt == "ascii":
                raise PlyError(path, "ASCII PLY is not supported; expected binary_little_endian")
            if fmt == "binary_big_endian":
                raise PlyError(path, "big-endian PLY is not supported; expected binary_little_endian")
            if fmt != "binary_little_endian":
                raise PlyError(path, f"unknown PLY format {fmt!r}; expected binary_little_endian")
            format_seen = True
        elif keyword == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise PlyError(path, f"malformed header line {line!r}")
            elements.append(_Element(words[1], int(words[2])))
        elif keyword == "property":
            if not elements:
                raise PlyError(path, f"property before any element: {line!r}")
            if len(words) >= 2 and words[1] == "list":
                elements[-1].has_list = True
                continue
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise PlyError(path, f"malformed or unknown property type in {line!r}")
            elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
        else:
            raise PlyError(path, f"unexpected header line {line!r}")
    if not format_seen:
        raise PlyError(path, "the PLY header has no 'format' line")
    return elements


def read_ply(path: str | os.PathLike) -> Gaussians:
    """Reads a 3DGS PLY file (the layout `write_ply` writes) as one scene of Gaussians.

    Properties beyond the standard ones (f_rest_*, ...) are ignored; `level` defaults to 0 and
    `parent` to -1 when absent. Attributes come back as float32 CPU tensors, level/parent as
    int64. Raises PlyError saying what is wrong (wrong format, missing element or property,
    truncated data, unreadable file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            elements = _read_header(f, path)
            vertex = next((e for e in elements if e.name == "vertex"), None)
            if vertex is None:
                raise PlyError(path, "the PLY file has no 'vertex' element")
            # Elements before the vertices (rare) have to be skipped by their byte size.
            for element in elements[: elements.index(vertex)]:
                if element.has_list:
                    raise PlyError(path, f"cannot skip element {element.name!r} with list properties before 'vertex'")
                f.seek(element.count * element.dtype().itemsize, os.SEEK_CUR)
            if vertex.has_list:
                raise PlyError(path, "list properties in the 'vertex' element are not supported")
            names = [name for name, _ in vertex.properties]
            missing = [name for name in REQUIRED_PROPERTIES if name not in names]
            if missing:
                raise PlyError(path, f"the vertex element lacks the property {', '.join(missing)}")
            if len(set(names)) != len(names):
                raise PlyError(path, "the vertex element names a property twice")
            dtype = vertex.dtype()
            expected = vertex.count * dtype.itemsize
            data = f.read(expected)
    except OSError as e:
        raise PlyError(path, f"cannot read the file: {e.strerror or e}") from e
    if len(data) < expected:
        raise PlyError(
            path, f"truncated: {vertex.count} vertices need {expected} bytes of data, found {len(data)}"
        )
    records = np.frombuffer(data, dtype=dtype, count=vertex.count)

    def floats(*columns: str) -> torch.Tensor:  # [N, len(columns)]
        stacked = np.stack([records[c].astype(np.float32) for c in columns], axis=-1)
        return torch.from_numpy(stacked)

    n = vertex.count
    level = torch.from_numpy(records["level"].astype(np.int64)) if "level" in names else torch.zeros(n, dtype=torch.long)
    parent = (
        torch.from_numpy(records["parent"].astype(np.int64)) if "parent" in names else torch.full((n,), -1, dtype=torch.long)
    )
    if n and (int(parent.min()) < -1 or int(parent.max()) >= n):
        raise PlyError(path, f"parent indices must lie in [-1, {n}), found {int(parent.min())}..{int(parent.max())}")
    return Gaussians(
        means=floats("x", "y", "z"),
        log_scales=floats("scale_0", "scale_1", "scale_2"),
        quats=floats("rot_0", "rot_1", "rot_2", "rot_3"),
        opacity_logits=floats("opacity")[:, 0].contiguous(),
        sh_dc=floats("f_dc_0", "f_dc_1", "f_dc_2"),
        level=level,
        parent=parent,
    )
