"""Property-based tests of the dataset reader: generated dataset.json files, camera labels, images and zip
archives (valid ones, mutated ones, damaged ones). Every case either passes `check_dataset` and then loads
in full with `ImageDataset`, or raises a one-line DatasetError; never any other exception.

Cameras that are real (random rotations rounded to float32) must pass, and cameras broken by a known
amount must be refused. docs/ROBUSTNESS.md (Datasets) lists what is tried and how many cases.
Run with `--hypothesis-show-statistics` to see how the cases split between refused and loaded.
"""

import io
import json
import math
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gsgan_core.data.dataset import RIGID_TOLERANCE, ImageDataset, check_dataset
from gsgan_core.errors import DatasetError


def fast(examples: int) -> settings:
    """A few seconds a test; no example database written into the working tree."""
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


SIZE = 8  # pixels: small images keep every case fast

IDENTITY = [float(v) for v in np.eye(4).reshape(-1)] + [4.2647, 0.0, 0.5, 0.0, 4.2647, 0.5, 0.0, 0.0, 1.0]


def note(what: str) -> None:
    """A hypothesis event (shown by --hypothesis-show-statistics); nothing outside a generated case."""
    try:
        event(what)
    except Exception:  # hypothesis refuses events outside a test it runs
        pass


def png(value: int = 128, channels: int = 3, size: int = SIZE) -> bytes:
    from PIL import Image

    mode = "RGB" if channels == 3 else "RGBA"
    buffer = io.BytesIO()
    Image.new(mode, (size, size), (value,) * channels).save(buffer, format="PNG")
    return buffer.getvalue()


def outcome(path) -> str:
    """"refused" (a one-line DatasetError) or "loaded" (checked, then every item read); anything else fails."""
    try:
        info = check_dataset(path, processes=1)
    except DatasetError as err:
        message = str(err)
        assert message and "\n" not in message and "\r" not in message, message
        note(f"refused: {err.problem.split(' (')[0][:40]}")
        return "refused"
    dataset = ImageDataset(path)  # what check_dataset accepted must load: no DatasetError either
    assert len(dataset) == info.num_images == dataset.num_files and dataset.resolution == info.resolution
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.dtype == torch.uint8 and image.shape == (4, info.resolution, info.resolution)
        assert label.dtype == torch.float32 and label.shape == (25,) and bool(torch.isfinite(label).all())
    note("loaded")
    return "loaded"


def folder_dataset(root: Path, files: dict[str, bytes], labels_json: bytes | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    if labels_json is not None:
        (root / "dataset.json").write_bytes(labels_json)
    return root


def zip_bytes(files: dict[str, bytes], labels_json: bytes | None, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, data in files.items():
            z.writestr(name, data)
        if labels_json is not None:
            z.writestr("dataset.json", labels_json)
    return buffer.getvalue()


def dumps(value) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as JSON's non-standard literals, as Python writes them


# ====================================================================== dataset.json of any shape
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400)
    | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)
NUMBER = st.one_of(
    st.floats(),  # NaN, infinities, subnormals, the float32 limits' neighbours
    st.sampled_from([1e39, -1e39, 3.4028235e38, 3.4028236e38, 3.5e38, 1e-46, -0.0]),
    st.integers(), st.integers(min_value=10**38, max_value=10**400),
)


@st.composite
def label_files(draw) -> tuple[bytes, int]:
    """dataset.json as bytes, for a dataset of images img0.png .. img{n-1}.png: mostly well-formed, with
    one part of it (the whole file, the labels list, an entry, a label, a value) replaced by anything."""
    n = draw(st.integers(1, 3))
    labels = [[f"img{i}.png", list(IDENTITY)] for i in range(n)]
    where = draw(st.sampled_from(["file", "labels", "entry", "name", "label", "value", "values", "bytes", "none"]))
    i = draw(st.integers(0, n - 1))
    document = {"labels": labels}
    if where == "file":
        document = draw(JSON)
    elif where == "labels":
        document["labels"] = draw(JSON)
    elif where == "entry":
        labels[i] = draw(JSON)
    elif where == "name":
        labels[i][0] = draw(st.text(max_size=12) | JSON)
    elif where == "label":
        labels[i][1] = draw(st.lists(NUMBER, min_size=23, max_size=27) | JSON)
    elif where == "value":
        labels[i][1][draw(st.integers(0, 24))] = draw(NUMBER | JSON)
    elif where == "values":
        labels[i][1] = draw(st.lists(NUMBER, min_size=25, max_size=25))
    text = dumps(document)
    if where == "bytes":  # the text itself damaged: bytes changed, cut short, a BOM or another encoding
        choice = draw(st.sampled_from(["flip", "cut", "bom", "utf16", "deep"]))
        if choice == "flip":
            data = bytearray(text)
            for _ in range(draw(st.integers(1, 4))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
            text = bytes(data)
        elif choice == "cut":
            text = text[: draw(st.integers(0, len(text) - 1))]
        elif choice == "bom":
            text = b"\xef\xbb\xbf" + text
        elif choice == "utf16":
            text = text.decode().encode("utf-16")
        else:
            text = b"[" * 100_000 + b"]" * 100_000  # deeper than the JSON parser's recursion
    note(f"dataset.json: {where}")
    return text, n


@fast(300)
@given(label_files())
def test_any_dataset_json_is_checked_or_refused(case):
    text, n = case
    with tempfile.TemporaryDirectory() as tmp:
        files = {f"img{i}.png": png(40 * i) for i in range(n)}
        outcome(folder_dataset(Path(tmp) / "ds", files, text))


# ====================================================================== cameras: real ones pass, broken ones do not
@st.composite
def cameras(draw) -> tuple[list[float], str, bool | None]:
    """(label, what was done, must it be refused: True, False, or None where the check decides).

    A random rotation (from a unit quaternion), eye and intrinsics, rounded to float32 like every label
    that a float32 pipeline writes, then perhaps broken by a known amount."""
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    w, x, y, z = q / np.linalg.norm(q) if np.linalg.norm(q) > 0.05 else (1.0, 0.0, 0.0, 0.0)
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    cam2world = np.eye(4)
    cam2world[:3, :3] = R
    cam2world[:3, 3] = draw(st.lists(st.floats(-1e4, 1e4), min_size=3, max_size=3))
    fx, fy = draw(st.floats(1e-3, 100)), draw(st.floats(1e-3, 100))
    K = np.array([[fx, 0, draw(st.floats(-1, 2))], [0, fy, draw(st.floats(-1, 2))], [0, 0, 1]])
    kind = draw(st.sampled_from(["real", "scale", "shear", "mirror", "bottom", "focal", "K-row", "noise"]))
    refuse: bool | None = kind != "real"
    if kind == "scale":
        scale = np.array(draw(st.lists(st.floats(0.01, 100), min_size=3, max_size=3)))
        cam2world[:3, :3] = R * scale  # columns scaled
        refuse = None if np.abs(scale - 1).max() < 1e-3 else True
    elif kind == "shear":
        shear = np.eye(3)
        shear[draw(st.sampled_from([(0, 1), (0, 2), (1, 2), (1, 0)]))] = amount = draw(st.floats(-2, 2))
        cam2world[:3, :3] = R @ shear
        refuse = None if abs(amount) < 1e-3 else True
    elif kind == "mirror":
        cam2world[:3, draw(st.integers(0, 2))] *= -1
    elif kind == "bottom":
        cam2world[3, draw(st.integers(0, 3))] += (change := draw(st.floats(-10, 10)))
        refuse = None if abs(change) < 1e-3 else True
    elif kind == "focal":
        K[draw(st.sampled_from([(0, 0), (1, 1)]))] = draw(st.floats(-100, 0))
    elif kind == "K-row":
        K[2, draw(st.integers(0, 2))] += (change := draw(st.floats(-10, 10)))
        refuse = None if abs(change) < 1e-3 else True
    elif kind == "noise":  # float32 round-off of a long pipeline: far inside the tolerance
        cam2world[:3, :3] += np.array(draw(st.lists(st.floats(-1e-6, 1e-6), min_size=9, max_size=9))).reshape(3, 3)
        refuse = False
    label = np.concatenate([cam2world.reshape(-1), K.reshape(-1)]).astype(np.float32).astype(np.float64)
    note(f"camera: {kind}")
    return label.tolist(), kind, refuse


@fast(300)
@given(cameras(), st.booleans())
def test_real_cameras_pass_and_broken_ones_are_refused(camera, as_zip):
    label, kind, refuse = camera
    files = {"a.png": png(), "b.png": png(200)}
    labels = dumps({"labels": [["a.png", IDENTITY], ["b.png", label]]})
    with tempfile.TemporaryDirectory() as tmp:
        if as_zip:
            path = Path(tmp) / "ds.zip"
            path.write_bytes(zip_bytes(files, labels))
        else:
            path = folder_dataset(Path(tmp) / "ds", files, labels)
        result = outcome(path)
        if refuse is not None:
            assert result == ("refused" if refuse else "loaded"), (kind, label)
        if result == "refused":
            with pytest.raises(DatasetError) as caught:
                check_dataset(path)
            assert "labels[1] (b.png)" in caught.value.problem and caught.value.path.endswith("dataset.json")
        else:  # what loads is a camera: a rotation and positive focal lengths, within the tolerance
            c = np.array(label[:16]).reshape(4, 4)
            assert np.abs(c[:3, :3].T @ c[:3, :3] - np.eye(3)).max() <= RIGID_TOLERANCE * 1.01
            assert label[16] > 0 and label[20] > 0


# ====================================================================== images of any mode and format
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F", "RGBa", "La"]
FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"]


@st.composite
def images(draw) -> bytes:
    """An image of a random mode, size and format (what Pillow can write), perhaps damaged."""
    from PIL import Image

    mode, format = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    width = draw(st.sampled_from([SIZE, SIZE, SIZE, 1, 5, 16]))
    height = draw(st.sampled_from([width, width, SIZE, 3]))
    seed = draw(st.integers(0, 2**32 - 1))
    channels = len(Image.new(mode, (1, 1)).getbands())
    rng = np.random.default_rng(seed)
    if mode in ("I", "I;16", "F"):
        dtype = {"I": np.int32, "I;16": np.uint16, "F": np.float32}[mode]
        array = rng.integers(0, 65536, (height, width)).astype(dtype)
        image = Image.fromarray(array, mode=mode) if mode != "I;16" else Image.fromarray(array)
    else:
        pixels = rng.integers(0, 256, width * height * channels, np.uint8).tobytes()
        image = Image.frombytes(mode, (width, height), pixels)
    options = {}
    if mode == "P" and draw(st.booleans()):
        options["transparency"] = draw(st.integers(0, 255))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=format, **options)
    except (OSError, ValueError, KeyError, TypeError):
        note("image: Pillow cannot write it")
        return png()
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "flip", "cut"]))
    if damage == "flip":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        data = bytes(data)
    elif damage == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    note(f"image: {mode} {format} {damage}")
    return data


@fast(300)
@given(images())
def test_any_image_is_converted_or_refused(data):
    with tempfile.TemporaryDirectory() as tmp:
        labels = dumps({"labels": [["a.png", IDENTITY], ["b.png", IDENTITY]]})
        outcome(folder_dataset(Path(tmp) / "ds", {"a.png": data, "b.png": png(size=SIZE)}, labels))


# ====================================================================== zip archives: members, names, damage
COMPRESSIONS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
NAMES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=10) \
    | st.sampled_from(["a.png", "sub/a.png", "./a.png", "/a.png", "../a.png", "a.png/", "dataset.json", "a b.png",
                       "é.png", "a\nb.png"])


@st.composite
def archives(draw) -> bytes:
    """A zip dataset with generated member names (listed or not), compression, then damaged bytes."""
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    listed = [n for n in names if draw(st.integers(0, 3)) > 0] or names[:1]
    if draw(st.integers(0, 3)) == 0:  # names listed in dataset.json, perhaps not in the archive
        listed += draw(st.lists(NAMES, max_size=2))
    files = {name: png(50 * i) for i, name in enumerate(names)}
    labels = [[name, IDENTITY] for name in listed]
    has_labels = draw(st.integers(0, 9)) > 0
    data = zip_bytes(files, dumps({"labels": labels}) if has_labels else None, draw(st.sampled_from(COMPRESSIONS)))
    damage = draw(st.sampled_from(["none", "none", "flip", "flip", "cut", "utf8-flag", "zero", "encrypted"]))
    data = bytearray(data)
    if damage == "flip":
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif damage == "cut":
        data = data[: draw(st.integers(1, len(data) - 1))]
    elif damage == "utf8-flag":  # every name flagged as UTF-8, and one byte of a name made invalid UTF-8
        for header, flag_at in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
            at = data.find(header)
            while at >= 0:
                data[at + flag_at + 1] |= 0x08  # general purpose bit 11, in the flag's high byte
                at = data.find(header, at + 4)
        at = data.find(b"PK\x01\x02")
        data[at + 46] = 0xFF  # the first byte of the first name in the central directory
    elif damage == "encrypted":  # the encryption flag set on a member (data unchanged)
        at = data.find(b"PK\x01\x02", draw(st.integers(0, len(data) - 1)))
        if at >= 0:
            data[at + 8] |= 0x01
    elif damage == "zero":  # a run of zero bytes over the middle: directory or data
        start = draw(st.integers(0, len(data) - 1))
        end = min(len(data), start + draw(st.integers(1, 64)))
        data[start:end] = bytes(end - start)
    note(f"archive: {damage}")
    return bytes(data)


@fast(300)
@given(archives())
def test_any_zip_archive_is_checked_or_refused(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ds.zip"
        path.write_bytes(data)
        outcome(path)


# ====================================================================== folders: missing and extra files
@st.composite
def folders(draw) -> tuple[dict[str, bytes], bytes]:
    n = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.sampled_from([SIZE, SIZE, SIZE, 4]), min_size=n, max_size=n))
    files = {f"img{i}.png": png(30 * i, draw(st.sampled_from([3, 4])), size) for i, size in enumerate(sizes)}
    listed = draw(st.permutations(sorted(files)))[: draw(st.integers(0, n))]  # some of the files, any order
    if draw(st.integers(0, 3)) == 0:  # names that are no file: missing, a folder, empty, twice
        listed += draw(st.lists(st.sampled_from(["gone.png", "sub", "", "img0.png", "sub/x.png"]), max_size=2))
    if draw(st.integers(0, 3)) == 0:
        for name in draw(st.lists(st.sampled_from(sorted(files)), max_size=2)):
            files.pop(name, None)  # listed but deleted
    return files, dumps({"labels": [[name, IDENTITY] for name in listed]})


@fast(150)
@given(folders())
def test_any_folder_is_checked_or_refused(case):
    files, labels = case
    with tempfile.TemporaryDirectory() as tmp:
        root = folder_dataset(Path(tmp) / "ds", files, labels)
        (root / "sub").mkdir()
        outcome(root)


def test_harness_loads_a_good_dataset_and_refuses_a_bad_one():
    """Sanity check of the harness itself: a valid dataset loads; a broken label is refused."""
    with tempfile.TemporaryDirectory() as tmp:
        ok = folder_dataset(Path(tmp) / "ok", {"a.png": png()}, dumps({"labels": [["a.png", IDENTITY]]}))
        assert outcome(ok) == "loaded"
        bad = list(IDENTITY)
        bad[0] = math.inf
        broken = folder_dataset(Path(tmp) / "bad", {"a.png": png()}, dumps({"labels": [["a.png", bad]]}))
        assert outcome(broken) == "refused"
