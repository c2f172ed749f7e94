"""Dataset reader, validation errors (one malformed fixture each), and the procedural heads dataset."""

import io
import json
import math
import zipfile

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from gsgan_core.cameras import labels_to_cameras, mirror_cameras, orbit_camera, to_rasterizer
from gsgan_core.cli import dataset_main
from gsgan_core.data.dataset import ImageDataset, check_dataset, composite
from gsgan_core.data.heads import (
    HEADS_FOV_DEG, HEADS_PIVOT, HEADS_RADIUS, camera_rays, head_bounding_sphere, make_heads_dataset, render_head,
)
from gsgan_core.errors import DatasetError

LABEL = [float(v) for v in np.eye(4).reshape(-1)] + [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]


def png(size=(16, 16), channels=3, value=128) -> bytes:
    return iio.imwrite("<bytes>", np.full((*size, channels), value, np.uint8), extension=".png")


def write_folder(root, files: dict[str, bytes], labels) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    if labels is not None:
        (root / "dataset.json").write_text(labels if isinstance(labels, str) else json.dumps({"labels": labels}))
    return str(root)


def good_files(n=3, **kw):
    return {f"img{i}.png": png(**kw) for i in range(n)}, [[f"img{i}.png", LABEL] for i in range(n)]


# ---------------------------------------------------------------------------------- reader
def test_folder_and_zip_read_the_same(tmp_path):
    files, labels = good_files(3, channels=4, value=200)
    folder = write_folder(tmp_path / "ds", files, labels)
    zpath = tmp_path / "ds.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("dataset.json", json.dumps({"labels": labels}))
    for path in (folder, zpath):
        info = check_dataset(path)
        assert (info.num_images, info.resolution, info.channels) == (3, 16, 4)
        dataset = ImageDataset(path)
        image, label = dataset[1]
        assert image.shape == (4, 16, 16) and image.dtype == torch.uint8 and int(image[0, 0, 0]) == 200
        assert torch.allclose(label, torch.tensor(LABEL))


def test_rgb_gets_opaque_alpha_and_composite_uses_alpha(tmp_path):
    files, labels = good_files(2, channels=3, value=255)
    dataset = ImageDataset(write_folder(tmp_path / "ds", files, labels))
    image, _ = dataset[0]
    assert int(image[3].min()) == 255
    rgba = torch.zeros(1, 4, 2, 2, dtype=torch.uint8)  # fully transparent black
    out = composite(rgba, torch.tensor([[1.0, 0.0, 0.5]]))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, -1.0, 0.0]))


def test_xflip_mirrors_image_and_camera(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 0] = 255  # left column white
    cam2world, K = orbit_camera(0.3, 0.1)
    label = torch.cat([cam2world.reshape(-1), K.reshape(-1)]).tolist()
    folder = write_folder(tmp_path / "ds", {"a.png": iio.imwrite("<bytes>", image, extension=".png")}, [["a.png", label]])
    dataset = ImageDataset(folder, xflip=True)
    assert len(dataset) == 2
    flipped, flipped_label = dataset[1]
    assert int(flipped[0, 0, -1]) == 255 and int(flipped[0, 0, 0]) == 0
    expected, _ = labels_to_cameras(torch.tensor(label))
    assert torch.allclose(labels_to_cameras(flipped_label)[0], mirror_cameras(expected), atol=1e-6)


# ---------------------------------------------------------------------------------- validation errors
def _problem(path) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        check_dataset(path)
    return caught.value


def test_missing_dataset_json(tmp_path):
    files, _ = good_files()
    err = _problem(write_folder(tmp_path / "ds", files, None))
    assert err.path.endswith("dataset.json") and "missing" in err.problem


def test_unreadable_dataset_json(tmp_path):
    files, _ = good_files()
    err = _problem(write_folder(tmp_path / "ds", files, "{not json"))
    assert err.path.endswith("dataset.json") and "not valid JSON" in err.problem


def test_label_not_25_numbers(tmp_path):
    files, labels = good_files()
    labels[1][1] = LABEL[:24]
    err = _problem(write_folder(tmp_path / "ds", files, labels))
    assert "img1.png" in err.problem and "25" in err.problem
    labels[1][1] = LABEL[:24] + ["x"]
    assert "img1.png" in _problem(write_folder(tmp_path / "ds2", files, labels)).problem


def test_missing_image(tmp_path):
    files, labels = good_files()
    del files["img2.png"]
    err = _problem(write_folder(tmp_path / "ds", files, labels))
    assert err.path.endswith("img2.png") and "missing" in err.problem


def test_corrupt_image(tmp_path):
    files, labels = good_files()
    files["img1.png"] = files["img1.png"][:40]  # truncated PNG
    err = _problem(write_folder(tmp_path / "ds", files, labels))
    assert err.path.endswith("img1.png") and "decoded" in err.problem


def test_mixed_sizes(tmp_path):
    files, labels = good_files()
    files["img2.png"] = png(size=(32, 32))
    err = _problem(write_folder(tmp_path / "ds", files, labels))
    assert err.path.endswith("img2.png") and "one size" in err.problem


def test_non_square(tmp_path):
    files, labels = good_files()
    files["img0.png"] = png(size=(16, 24))
    err = _problem(write_folder(tmp_path / "ds", files, labels))
    assert err.path.endswith("img0.png") and "square" in err.problem


def test_empty_dataset(tmp_path):
    err = _problem(write_folder(tmp_path / "ds", {}, []))
    assert "empty" in err.problem


def test_not_a_dataset(tmp_path):
    assert "not found" in _problem(tmp_path / "nothing").problem
    (tmp_path / "file.zip").write_bytes(b"hello")
    assert "not a zip" in _problem(tmp_path / "file.zip").problem


def test_check_command_reports_the_file_and_fails(tmp_path, capsys):
    files, labels = good_files()
    files["img1.png"] = b"garbage"
    folder = write_folder(tmp_path / "ds", files, labels)
    assert dataset_main(["check", folder]) == 1
    assert "img1.png" in capsys.readouterr().err
    del files["img1.png"]
    labels = labels[:1] + labels[2:]
    ok = write_folder(tmp_path / "ok", files, labels)
    assert dataset_main(["check", ok]) == 0
    assert "OK, 2 images, 16x16" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- heads
def test_heads_cameras_follow_the_ffhq_convention():
    for index in range(4):
        _, label, _ = render_head(3, index, 16)
        cam2world, K = labels_to_cameras(torch.tensor(label))
        eye, forward = cam2world[:3, 3], cam2world[:3, 2]
        assert math.isclose(float(eye.norm()), HEADS_RADIUS, rel_tol=1e-6)
        to_pivot = torch.tensor(HEADS_PIVOT, dtype=eye.dtype) - eye
        assert torch.allclose(forward, to_pivot / to_pivot.norm(), atol=1e-6)  # looks at the pivot
        assert float(cam2world[:3, 1] @ torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype)) < 0  # image y points down
        assert torch.allclose(cam2world[:3, :3].det(), torch.tensor(1.0, dtype=eye.dtype), atol=1e-6)
        fov = math.degrees(2 * math.atan(0.5 / float(K[1, 1])))
        assert math.isclose(fov, HEADS_FOV_DEG, rel_tol=1e-6)


def test_heads_orbit_cameras_see_every_side():
    yaws, backs = [], 0
    for index in range(48):
        rgba, label, parts = render_head(2, index, 16, cameras="orbit")
        eye = torch.tensor(label[:16]).view(4, 4)[:3, 3]
        assert math.isclose(float(eye.norm()), HEADS_RADIUS, rel_tol=1e-6)
        yaw = math.atan2(float(eye[0]), float(eye[2]))
        yaws.append(yaw)
        if abs(yaw) > 2.5:  # from behind: the head still fills the middle of the image
            backs += 1
            assert rgba[8, 8, 3] == 255
    assert min(yaws) < -2.0 and max(yaws) > 2.0 and backs > 0
    assert render_head(2, 0, 16)[1][3] != render_head(2, 0, 16, cameras="orbit")[1][3]  # ffhq stays the default
    with pytest.raises(ValueError, match="cameras"):
        render_head(2, 0, 16, cameras="sideways")


def test_heads_alpha_matches_the_geometry():
    resolution = 32
    for index in range(3):
        rgba, label, parts = render_head(5, index, resolution)
        alpha = rgba[..., 3]
        cam2world, K = labels_to_cameras(torch.tensor(label, dtype=torch.float64))
        # 1. the front of the head, projected with the rasterizer's conventions, is opaque
        head = parts[0]
        viewmat, Kpix = to_rasterizer(cam2world, K, resolution, resolution)
        front = torch.tensor(head.center + [0, 0, head.radii[2]], dtype=torch.float64)
        cam = viewmat[:3, :3] @ front + viewmat[:3, 3]
        u, v = (Kpix @ cam)[:2] / cam[2]
        assert alpha[int(v), int(u)] == 255
        # 2. pixels whose every sub-ray misses the bounding sphere are fully transparent
        center, radius = head_bounding_sphere(parts)
        origin, dirs = camera_rays(cam2world.numpy(), K.numpy(), resolution, 1)
        oc = origin - center
        b = dirs @ oc
        misses = b * b - (oc @ oc - radius**2) < -0.05  # margin for the pixel's footprint
        assert misses.any() and (alpha[misses] == 0).all()
        # 3. the silhouette has soft (supersampled) edges and a solid inside
        assert (alpha == 255).sum() > 0.15 * resolution**2 and ((alpha > 0) & (alpha < 255)).any()


def test_heads_dataset_is_deterministic_and_independent_of_processes(tmp_path):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    make_heads_dataset(a, 4, 16, seed=7, processes=1, progress=False)
    make_heads_dataset(b, 4, 16, seed=7, processes=2, progress=False)
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        assert za.namelist() == zb.namelist()
        for name in za.namelist():
            assert za.read(name) == zb.read(name)
    info = check_dataset(a)
    assert (info.num_images, info.resolution, info.channels) == (4, 16, 4)
    with zipfile.ZipFile(a) as za:
        first = iio.imread(io.BytesIO(za.read("img00000000.png")))
    c = tmp_path / "c.zip"
    make_heads_dataset(c, 1, 16, seed=8, processes=1, progress=False)
    with zipfile.ZipFile(c) as zc:
        assert not np.array_equal(first, iio.imread(io.BytesIO(zc.read("img00000000.png"))))


def test_heads_command(tmp_path, capsys):
    out = tmp_path / "h.zip"
    assert dataset_main(["heads", "--count", "2", "--resolution", "16", "--out", str(out), "--jobs", "1"]) == 0
    assert check_dataset(out).num_images == 2
    capsys.readouterr()  # the progress bar
    assert dataset_main(["heads", "--count", "2", "--resolution", "16", "--out", str(tmp_path / "h.tar")]) == 2
    assert capsys.readouterr().err == f"gsgan-dataset: error: --out must name a .zip file, got {tmp_path / 'h.tar'}\n"


@pytest.mark.parametrize("flags, status, message", [
    (["--count", "0"], 2, "--count must be at least 1, got 0"),
    (["--resolution", "4"], 2, "--resolution must be between 8 and 4096 pixels, got 4"),
    (["--seed", "-1"], 1, "--seed must be in [0, 4294967295], got -1"),
])
def test_heads_command_refuses_bad_numbers_in_one_line(tmp_path, capsys, flags, status, message):
    out = tmp_path / "h.zip"
    args = {"--count": "1", "--resolution": "8", "--seed": "0", **dict(zip(flags[::2], flags[1::2]))}
    assert dataset_main(["heads", "--out", str(out), "--jobs", "1", *(x for kv in args.items() for x in kv)]) == status
    assert capsys.readouterr().err == f"gsgan-dataset: error: {message}\n"
    assert not out.exists()


def test_parallel_check_reports_the_same_first_bad_file(tmp_path):
    files, labels = good_files(300, size=(8, 8))
    files["img120.png"] = b"garbage"
    files["img200.png"] = png(size=(16, 16))
    folder = write_folder(tmp_path / "ds", files, labels)
    for processes in (1, 2):
        with pytest.raises(DatasetError) as caught:
            check_dataset(folder, processes=processes)
        assert caught.value.path.endswith("img120.png")
    del files["img120.png"], files["img200.png"]
    ok = write_folder(tmp_path / "ok", files, [entry for entry in labels if entry[0] not in ("img120.png", "img200.png")])
    assert check_dataset(ok, processes=2).num_images == 298


# ---------------------------------------------------------------------------------- cameras in the labels
def _label_with(cam2world=None, K=None) -> list[float]:
    c, k = orbit_camera(0.3, 0.1)  # a real camera (float32 rounding and all)
    c = c if cam2world is None else torch.as_tensor(cam2world, dtype=torch.float32)
    k = k if K is None else torch.as_tensor(K, dtype=torch.float32)
    return torch.cat([c.reshape(-1), k.reshape(-1)]).tolist()


def _bad_label_problem(tmp_path, label, index=1) -> DatasetError:
    files, labels = good_files()
    labels[index][1] = label
    err = _problem(write_folder(tmp_path / "ds", files, labels))
    assert err.path.endswith("dataset.json"), err
    assert f"labels[{index}]" in err.problem and f"img{index}.png" in err.problem, err
    return err


def test_real_cameras_pass_with_float32_rounding(tmp_path):
    files, labels = good_files()
    labels[0][1] = _label_with()
    labels[1][1] = [round(v, 6) for v in _label_with()]  # printed with 6 decimals
    noisy = torch.tensor(_label_with()) + 3e-6 * torch.randn(25, generator=torch.Generator().manual_seed(0))
    labels[2][1] = noisy.tolist()
    assert check_dataset(write_folder(tmp_path / "ds", files, labels)).num_images == 3


@pytest.mark.parametrize("scale", [(1.1, 1.1, 1.1), (1.0, 1.0, 0.5), (1.01, 1.0, 1.0)])
def test_scaled_rotation_is_refused(tmp_path, scale):
    c, _ = orbit_camera(0.3, 0.1)
    c[:3, :3] = c[:3, :3] * torch.tensor(scale)
    err = _bad_label_problem(tmp_path, _label_with(cam2world=c))
    assert "rigid" in err.problem and "cam2world" in err.problem


def test_sheared_rotation_is_refused(tmp_path):
    c, _ = orbit_camera(0.3, 0.1)
    shear = torch.eye(3)
    shear[0, 1] = 0.2
    c[:3, :3] = c[:3, :3] @ shear
    assert "rigid" in _bad_label_problem(tmp_path, _label_with(cam2world=c)).problem


def test_reflection_is_refused(tmp_path):
    c, _ = orbit_camera(0.3, 0.1)
    c[:3, 0] = -c[:3, 0]  # orthonormal, det -1: a mirrored camera
    assert "det" in _bad_label_problem(tmp_path, _label_with(cam2world=c)).problem


def test_bad_bottom_row_is_refused(tmp_path):
    c, _ = orbit_camera(0.3, 0.1)
    c[3] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert "0 0 0 1" in _bad_label_problem(tmp_path, _label_with(cam2world=c), index=0).problem


@pytest.mark.parametrize("fx, fy", [(0.0, 4.2647), (4.2647, -4.2647), (-1.0, -1.0)])
def test_zero_or_negative_focal_length_is_refused(tmp_path, fx, fy):
    _, K = orbit_camera(0.3, 0.1)
    K[0, 0], K[1, 1] = fx, fy
    assert "focal" in _bad_label_problem(tmp_path, _label_with(K=K), index=2).problem


@pytest.mark.parametrize("position", [3, 17, 18])  # a translation, the skew, cx
def test_label_overflowing_float32_is_refused(tmp_path, position):
    label = _label_with()
    label[position] = 1e39  # finite in JSON and Python, inf as float32
    err = _bad_label_problem(tmp_path, label)
    assert "float32" in err.problem


def test_training_names_the_file_and_label(tmp_path, capsys):
    from gsgan_core.cli import train_main

    files, labels = good_files()
    labels[1][1] = _label_with()
    labels[1][1][7] = 1e39  # the translation's z
    folder = write_folder(tmp_path / "ds", files, labels)
    assert train_main(["--data", folder, "--outdir", str(tmp_path / "run"), "--device", "cpu", "--workers", "0"]) == 1
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if "error" in line]  # the rest is the check's progress bar
    assert len(err) == 1 and "Traceback" not in stderr, stderr
    assert err[0].startswith("gsgan-train: error: ") and "dataset.json" in err[0]
    assert "labels[1] (img1.png)" in err[0] and "float32" in err[0]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_check_command_prints_one_line_for_a_bad_camera(tmp_path, capsys):
    files, labels = good_files()
    labels[2][1] = _label_with(K=torch.zeros(3, 3))
    zpath = tmp_path / "ds.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("dataset.json", json.dumps({"labels": labels}))
    assert dataset_main(["check", str(zpath)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{zpath}:dataset.json" in err[0] and "labels[2] (img2.png)" in err[0], err


# ---------------------------------------------------------------------------------- image modes
def _pil_bytes(image, format="PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


def _dataset_of(tmp_path, data: bytes, name="a.png"):
    folder = write_folder(tmp_path / "ds", {name: data}, [[name, LABEL]])
    return check_dataset(folder), ImageDataset(folder)[0][0]


def test_cmyk_jpeg_is_read_as_rgb(tmp_path):
    from PIL import Image

    red = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # cyan 0, magenta and yellow full, black 0
    info, image = _dataset_of(tmp_path, _pil_bytes(red, "JPEG", quality=95), "a.jpg")
    assert info.channels == 3
    r, g, b, a = (int(v) for v in image[:, 8, 8])
    assert r > 240 and g < 15 and b < 15 and a == 255, (r, g, b, a)


def test_grayscale_palette_and_16_bit_images_are_rgb_or_rgba(tmp_path):
    from PIL import Image

    gray = Image.new("L", (16, 16), 100)
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    transparent = palette.copy()
    la = Image.new("LA", (16, 16), (100, 50))
    deep = Image.fromarray(np.full((16, 16), 65535 * 100 // 255, np.uint16))  # 16-bit grey of 100/255
    cases = [  # (image, save options, channels, pixel)
        (gray, {}, 3, (100, 100, 100, 255)),
        (palette, {}, 3, (10, 200, 30, 255)),
        (transparent, {"transparency": 1}, 4, (10, 200, 30, 0)),
        (la, {}, 4, (100, 100, 100, 50)),
        (deep, {}, 3, (100, 100, 100, 255)),
        (Image.new("1", (16, 16), 1), {}, 3, (255, 255, 255, 255)),
    ]
    for i, (image, save, channels, pixel) in enumerate(cases):
        info, loaded = _dataset_of(tmp_path / str(i), _pil_bytes(image, **save))
        assert info.channels == channels, (image.mode, info)
        assert tuple(int(v) for v in loaded[:, 3, 3]) == pixel, (image.mode, loaded[:, 3, 3])


def test_unconvertible_image_mode_is_refused_by_name(tmp_path):
    from PIL import Image

    floats = Image.fromarray(np.full((16, 16), 0.5, np.float32))  # mode F, saved as TIFF
    err = _problem(write_folder(tmp_path / "ds", {"a.png": _pil_bytes(floats, "TIFF")}, [["a.png", LABEL]]))
    assert err.path.endswith("a.png") and "mode F" in err.problem
    lab = Image.new("LAB", (16, 16), (50, 10, 20))  # its "A" band is a colour, not alpha
    err = _problem(write_folder(tmp_path / "lab", {"a.png": _pil_bytes(lab, "TIFF")}, [["a.png", LABEL]]))
    assert err.path.endswith("a.png") and "mode LAB" in err.problem
    ppm = _pil_bytes(Image.new("RGB", (16, 16)), "PPM")
    err = _problem(write_folder(tmp_path / "ppm", {"a.png": ppm}, [["a.png", LABEL]]))
    assert err.path.endswith("a.png") and "PPM" in err.problem


# ---------------------------------------------------------------------------------- broken zips
def _zip_bytes(files: dict[str, bytes], labels) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("dataset.json", json.dumps({"labels": labels}))
    return buffer.getvalue()


def _corrupt_member(archive: bytes, member: str) -> bytes:
    """The archive with one byte in the middle of `member`'s stored data changed: its CRC no longer fits."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        info = z.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(archive)
    data[start + info.compress_size // 2] ^= 0x55
    return bytes(data)


@pytest.mark.parametrize("member", ["img1.png", "dataset.json"])
def test_bad_crc_names_the_zip_and_member(tmp_path, member):
    files, labels = good_files()
    zpath = tmp_path / "ds.zip"
    zpath.write_bytes(_corrupt_member(_zip_bytes(files, labels), member))
    err = _problem(zpath)
    assert err.path == f"{zpath}:{member}" and "CRC" in err.problem, err
    if member != "dataset.json":
        dataset = ImageDataset(zpath)
        dataset[0]
        with pytest.raises(DatasetError, match="img1.png"):
            dataset[1]


def test_non_utf8_name_flagged_as_utf8_names_the_zip_and_member(tmp_path):
    files, labels = good_files()
    files["imgé.png"] = png()
    archive = _zip_bytes(files, labels)
    assert archive.count("imgé.png".encode()) == 2  # local header and central directory, UTF-8 flag set
    zpath = tmp_path / "ds.zip"
    zpath.write_bytes(archive.replace("imgé.png".encode(), b"img\xff\xfe.png"))
    err = _problem(zpath)
    assert err.path == str(zpath) and "UTF-8" in err.problem and "img\\xff\\xfe.png" in err.problem, err
    with pytest.raises(DatasetError, match="UTF-8"):
        ImageDataset(zpath)


def test_label_entries_of_any_json_type_are_named(tmp_path):
    """Found by tests/test_fuzz_data.py: an integer of 400 digits crashed the check with OverflowError."""
    files, labels = good_files()
    for i, (value, words) in enumerate([(10**400, "too large"), (True, "true"), (None, "null"), ("1", "string"),
                                        ([1.0], "list"), (float("nan"), "nan")]):
        labels[1][1] = list(LABEL)
        labels[1][1][5] = value
        err = _problem(write_folder(tmp_path / str(i), files, labels))
        assert "labels[1] (img1.png): entry 5" in err.problem and words in err.problem, err
    labels[1][1] = {"cam2world": LABEL[:16]}
    assert "an object, not a list" in _problem(write_folder(tmp_path / "obj", files, labels)).problem


def test_dataset_errors_cross_process_boundaries_whole():
    """A DataLoader worker's DatasetError reaches the main process as itself (path and problem kept)."""
    import pickle

    from gsgan_core.errors import DatasetError

    error = pickle.loads(pickle.dumps(DatasetError("heads.zip", "img1.png: bad CRC")))
    assert isinstance(error, DatasetError) and error.path == "heads.zip" and str(error) == "heads.zip: img1.png: bad CRC"
