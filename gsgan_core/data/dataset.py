"""EG3D-format datasets: a folder or a .zip of images plus `dataset.json` with camera labels.

    dataset.json = {"labels": [["img00000000.png", [25 floats]], ...]}

The 25 floats are the cam2world matrix (row-major, OpenCV axes) then the normalised intrinsics
(see gsgan_core/cameras.py). Every label is checked: finite as float32, cam2world a rigid transform
(rotation with R^T R = I and det +1, bottom row 0 0 0 1), focal lengths positive.

Images are PNG/JPEG (or another plain raster format Pillow reads), all square and of one size.
They become RGB or RGBA: grayscale, palette, CMYK and 16-bit images are converted; RGBA alpha
is kept so that training can composite reals on a random background colour.

`check_dataset` opens every image once before training starts, so a broken file is reported by
name up front instead of crashing a run hours in. `ImageDataset` reads items lazily (each worker
process opens the zip itself) and can append x-flipped copies with their mirrored cameras.
`real_images` composites items on white at a given resolution, as metrics compare them.
"""

from __future__ import annotations

import codecs
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from gsgan_core.cameras import cameras_to_labels, labels_to_cameras, mirror_cameras
from gsgan_core.errors import DatasetError

LABEL_FILE = "dataset.json"


# ====================================================================== raw access (folder or zip)
def shown(name: str) -> str:
    """A file name as a message shows it: one line, each character that does not print escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in name)


def _open_zip(path: Path) -> zipfile.ZipFile:
    """The archive, or a DatasetError naming it (and the member whose entry is broken, where known)."""
    try:
        return zipfile.ZipFile(path)
    except UnicodeDecodeError as err:  # a member flagged as UTF-8 whose name is not
        name = err.object.decode("utf-8", "backslashreplace") if isinstance(err.object, bytes) else "?"
        raise DatasetError(path, f"the member {shown(name)} is flagged as having a UTF-8 name but its name is "
                                 "not valid UTF-8: the archive is damaged or was written by a faulty tool") from None
    except OSError as err:
        raise DatasetError(path, f"cannot be read ({err.strerror or err})") from None
    except Exception as err:  # BadZipFile, and whatever else a damaged directory makes zipfile raise
        raise DatasetError(path, f"is not a readable zip archive ({type(err).__name__}: {err})") from None


class _Source:
    """Reads named files from a folder or a zip; the zip is opened lazily, once per process.

    Every failure is a DatasetError naming the file (for a zip: "archive:member").
    """

    def __init__(self, path: Path):
        self.path = path
        self.is_zip = path.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():  # a forked worker must not share the handle
            self._zip = _open_zip(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def names(self) -> set[str]:
        if self.is_zip:
            return {n for n in self._zipfile().namelist() if not n.endswith("/")}
        try:
            return {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}
        except OSError as err:
            raise DatasetError(self.path, f"cannot be listed ({err.strerror or err})") from None

    def read(self, name: str, missing: str = "is listed in dataset.json but missing") -> bytes:
        where = self.where(name)
        if self.is_zip:
            archive = self._zipfile()
            try:
                info = archive.getinfo(name)
            except KeyError:
                raise DatasetError(where, missing) from None
            if info.flag_bits & 0x1:
                raise DatasetError(where, "is encrypted; only unencrypted zip archives can be read")
            try:
                return archive.read(info)
            except zipfile.BadZipFile as err:  # a bad CRC, a local header that does not match the directory
                raise DatasetError(where, f"is damaged in the archive ({err})") from None
            except Exception as err:  # zlib.error, EOFError, NotImplementedError (compression), OSError
                raise DatasetError(where, f"cannot be read from the archive ({type(err).__name__}: {err})") from None
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            raise DatasetError(where, missing) from None
        except IsADirectoryError:
            raise DatasetError(where, "is a folder; an image file expected") from None
        except (OSError, ValueError) as err:  # permissions, a name the file system cannot hold
            raise DatasetError(where, f"cannot be read ({getattr(err, 'strerror', None) or err})") from None

    def where(self, name: str) -> str:
        """How to name a file inside the dataset in a message."""
        return f"{self.path}:{shown(name)}" if self.is_zip else str(self.path / shown(name))

    def __getstate__(self):  # picklable for DataLoader workers: drop the open handle
        return {"path": self.path, "is_zip": self.is_zip, "_zip": None, "_zip_pid": None}


def _open_source(path: str | os.PathLike) -> _Source:
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "not found (expected a folder or a .zip with dataset.json and images)")
    if path.is_file() and not zipfile.is_zipfile(path):
        raise DatasetError(path, "is a file but not a zip archive (expected a folder or a .zip)")
    return _Source(path)


# Raster formats read; others (EPS, PDF, ...) are refused before Pillow decodes them.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF")
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_REFUSED_MODES = {"F": "floating-point pixels", "LAB": "CIELAB colours, which Pillow does not convert to RGB"}


def _rgb_or_rgba(image, where: str) -> np.ndarray:  # PIL image -> uint8 [H, W, 3 or 4]
    """Any colour mode as 8-bit RGB, or RGBA when the image has alpha or a transparent colour."""
    mode = image.mode
    transparency = image.info.get("transparency")
    if mode in _GRAY16_MODES:  # 16-bit grayscale (PNG): scaled to 8 bits, not clipped
        gray = np.asarray(image).astype(np.int64)
        if gray.size and (gray.min() < 0 or gray.max() > 65535):
            raise DatasetError(where, f"has colour mode {mode} with values outside 0..65535; 8 or 16-bit expected")
        gray8 = ((gray * 255 + 32767) // 65535).astype(np.uint8)
        channels = [gray8] * 3
        if isinstance(transparency, int):
            channels.append(np.where(gray == transparency, 0, 255).astype(np.uint8))
        return np.stack(channels, axis=2)
    if mode in _REFUSED_MODES:
        raise DatasetError(where, f"has colour mode {mode} ({_REFUSED_MODES[mode]}); convert it to 8-bit RGB or RGBA")
    palette_alpha = mode == "P" and image.palette is not None and image.palette.mode.endswith("A")
    alpha = mode in _ALPHA_MODES or transparency is not None or palette_alpha
    target = "RGBA" if alpha else "RGB"
    if mode != target:  # L, LA, 1, P, PA, CMYK, YCbCr, RGBa, La, ...
        try:
            image = image.convert(target)
        except (ValueError, OSError) as err:
            raise DatasetError(where, f"has colour mode {mode}, which cannot be converted to {target} ({err})") \
                from None
    return np.asarray(image)


def decode_image(data: bytes, where: str) -> np.ndarray:  # -> uint8 [H, W, 3 or 4]
    """The image in `data` as 8-bit RGB or RGBA, or a DatasetError naming `where` and the problem."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_FORMATS:
                raise DatasetError(where, f"is a {image.format} file; a PNG or JPEG image expected")
            frames = getattr(image, "n_frames", 1) if image.format != "MPO" else 1  # MPO: a JPEG and extras
            if frames > 1:  # an animated PNG/GIF: not a training image
                raise DatasetError(where, f"has {frames} frames; one still image expected")
            image.load()
            pixels = _rgb_or_rgba(image, where)
    except DatasetError:
        raise
    except Exception as err:  # Pillow raises many kinds; all mean "not a readable image"
        raise DatasetError(where, f"cannot be decoded as an image ({type(err).__name__}: {err})") from None
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
        raise DatasetError(where, f"has shape {pixels.shape} and type {pixels.dtype}; 8-bit RGB or RGBA expected")
    if min(pixels.shape[:2]) < 1:
        raise DatasetError(where, f"is {pixels.shape[1]}x{pixels.shape[0]} pixels: empty")
    return pixels


# ====================================================================== labels
FLOAT32_MAX = float(np.finfo(np.float32).max)
RIGID_TOLERANCE = 1e-4  # on R^T R - I, det R - 1 and the bottom rows: ~1000 float32 ulps at 1.0


def _number(value) -> float | None:
    """A JSON number as a float (inf for an int too large for one); None for anything else (bool too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int of hundreds of digits
        return math.inf if value > 0 else -math.inf


def _json_type(value) -> str:
    """What a JSON value is, in words: "a string", "null", "true", ..."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), f"the number {value!r:.20}")


def _label_name(index: int, name: str) -> str:
    return f"labels[{index}] ({shown(name)})"


def _camera_problem(label: np.ndarray) -> str | None:
    """What is wrong with one label (float64 [25], finite), or None."""
    with np.errstate(all="ignore"):
        as32 = label.astype(np.float32)
    overflow = np.flatnonzero(~np.isfinite(as32))
    if overflow.size:
        i = int(overflow[0])
        return f"value {label[i]:g} (entry {i}) overflows float32 (largest {FLOAT32_MAX:.4g})"
    cam2world, K = as32.astype(np.float64)[:16].reshape(4, 4), as32.astype(np.float64)[16:].reshape(3, 3)
    values = lambda v: " ".join(f"{x:g}" for x in v)  # noqa: E731
    if np.abs(cam2world[3] - (0, 0, 0, 1)).max() > RIGID_TOLERANCE:
        return f"cam2world is not a rigid transform: its bottom row is {values(cam2world[3])}, not 0 0 0 1"
    R = cam2world[:3, :3]
    with np.errstate(all="ignore"):
        deviation = float(np.abs(R.T @ R - np.eye(3)).max())
        det = float(np.linalg.det(R))
    if not deviation <= RIGID_TOLERANCE:
        return (f"cam2world is not a rigid transform: its rotation is scaled or sheared (R^T R differs from I "
                f"by {deviation:.3g}; at most {RIGID_TOLERANCE:g} allowed)")
    if not abs(det - 1) <= RIGID_TOLERANCE:
        return (f"cam2world is not a rigid transform: its rotation has det {det:.4g} (a mirror image); "
                "a rotation has det +1")
    fx, fy = K[0, 0], K[1, 1]
    if not (fx > 0 and fy > 0):
        return f"focal lengths fx = {fx:g}, fy = {fy:g} (entries 16 and 20); both must be positive"
    if np.abs(K[2] - (0, 0, 1)).max() > RIGID_TOLERANCE:
        return f"the intrinsics' bottom row is {values(K[2])}, not 0 0 1"
    return None


def read_labels(source: _Source) -> list[tuple[str, list[float]]]:
    """The (file name, 25 floats) pairs of dataset.json, every one checked (DatasetError naming the label)."""
    where = source.where(LABEL_FILE)
    raw = source.read(LABEL_FILE, missing="missing: every dataset needs a dataset.json with camera labels")
    if raw.startswith(codecs.BOM_UTF8):  # written by a Windows editor: harmless
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, too many digits, too deep
        raise DatasetError(where, f"is not valid JSON ({type(err).__name__}: {str(err)[:200]})") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, list):
        raise DatasetError(where, 'has no "labels" list (expected {"labels": [["img.png", [25 floats]], ...]})')
    if not labels:
        raise DatasetError(where, "is empty: the dataset has no images")
    out, seen = [], set()
    for i, entry in enumerate(labels):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DatasetError(where, f"labels[{i}] is not a [file name, label] pair: {shown(str(entry)[:80])}")
        name, label = entry
        path = PurePosixPath(name)
        if not name or "\0" in name or path.is_absolute() or ".." in path.parts or name.endswith("/"):
            raise DatasetError(where, f"labels[{i}]: {shown(name)!r} is not the name of a file inside the dataset")
        if name in seen:
            raise DatasetError(where, f"labels[{i}]: {shown(name)} is listed twice")
        seen.add(name)
        if not isinstance(label, list):
            raise DatasetError(where, f"{_label_name(i, name)}: the label is {_json_type(label)}, "
                                      "not a list of 25 numbers")
        if len(label) != 25:
            raise DatasetError(where, f"{_label_name(i, name)}: the label has {len(label)} values, not 25")
        numbers = [_number(v) for v in label]
        for k, v in enumerate(numbers):
            if v is None or not math.isfinite(v):
                value = _json_type(label[k]) if v is None else f"{label[k]:.4g}" if isinstance(label[k], float) else (
                    "an integer too large for a float")
                raise DatasetError(where, f"{_label_name(i, name)}: entry {k} of the label is {value}; "
                                          "25 finite numbers expected")
        out.append((name, numbers))
    _check_cameras(out, where)
    return out


def _check_cameras(labels: list[tuple[str, list[float]]], where: str) -> None:
    """DatasetError naming the first label that is no camera: the whole array at once, then that one."""
    array = np.array([label for _, label in labels], dtype=np.float64)  # [N, 25], finite
    with np.errstate(all="ignore"):
        as32 = array.astype(np.float32)
        cams = as32.astype(np.float64)
        R = cams[:, :16].reshape(-1, 4, 4)[:, :3, :3]
        suspect = (
            ~np.isfinite(as32).all(axis=1)
            | (np.abs(cams[:, 12:16] - (0, 0, 0, 1)).max(axis=1) > RIGID_TOLERANCE)
            | ~(np.abs(R.transpose(0, 2, 1) @ R - np.eye(3)).max(axis=(1, 2)) <= RIGID_TOLERANCE)
            | ~(np.abs(np.linalg.det(R) - 1) <= RIGID_TOLERANCE)
            | ~((cams[:, 16] > 0) & (cams[:, 20] > 0))
            | (np.abs(cams[:, 22:25] - (0, 0, 1)).max(axis=1) > RIGID_TOLERANCE)
        )
    for i in np.flatnonzero(suspect):
        problem = _camera_problem(array[i])
        if problem is not None:
            raise DatasetError(where, f"{_label_name(int(i), labels[i][0])}: {problem}")


# ====================================================================== validation
@dataclass
class DatasetInfo:
    path: str
    num_images: int
    resolution: int
    channels: int  # 3 (RGB) or 4 (RGBA; some images may be RGB and count as opaque)


def _image_shape(job: tuple[_Source, str]) -> tuple[int, int, int] | tuple[str, str]:
    """(height, width, channels) of one image, or (where, problem) saying why it cannot be read.

    Plain tuples, not the exception itself, cross the process boundary.
    """
    source, name = job
    try:
        return decode_image(source.read(name), source.where(name)).shape
    except DatasetError as err:
        return err.path, err.problem


def check_dataset(path: str | os.PathLike, progress: bool = False, processes: int | None = None) -> DatasetInfo:
    """Opens dataset.json and every image; raises DatasetError naming the first bad file.

    Checks: dataset.json present and well-formed, each label 25 numbers finite as float32 that
    describe a camera (a rigid cam2world, positive focal lengths), each image present, readable
    from the archive and decodable as RGB(A), all images square and of one size, and at least one
    image. Every problem is one DatasetError naming the file (for a zip "archive:member"), and
    for a label its index and image. Images are decoded by `processes` worker processes (None:
    every core; small datasets: this process).
    """
    from multiprocessing import get_context

    from tqdm import tqdm

    source = _open_source(path)
    labels = read_labels(source)
    present = source.names()
    for i, (name, _) in enumerate(labels):
        if name not in present:
            raise DatasetError(source.where(name), f"is listed in dataset.json (labels[{i}]) but missing")
    jobs = [(source, name) for name, _ in labels]
    processes = 1 if len(jobs) < 256 else max(1, processes or os.cpu_count() or 1)
    pool = get_context("fork").Pool(processes) if processes > 1 else None
    shapes = pool.imap(_image_shape, jobs, chunksize=64) if pool else map(_image_shape, jobs)
    size: tuple[int, int] | None = None
    first_name = ""
    channels = 3
    try:
        for (_, name), shape in tqdm(zip(jobs, shapes), total=len(jobs), desc="checking images", unit="img",
                                     disable=not progress):
            if isinstance(shape[0], str):
                raise DatasetError(*shape)
            h, w = shape[:2]
            if h != w:
                raise DatasetError(source.where(name), f"is {w}x{h}; images must be square")
            if size is None:
                size, first_name = (h, w), name
            elif (h, w) != size:
                raise DatasetError(
                    source.where(name),
                    f"is {w}x{h} but {first_name} is {size[1]}x{size[0]}; all images must be one size",
                )
            channels = max(channels, shape[2])
    finally:
        if pool is not None:
            pool.terminate()
    return DatasetInfo(str(path), len(labels), size[0], channels)


# ====================================================================== the dataset
class ImageDataset(torch.utils.data.Dataset):
    """Items: (image uint8 [4, R, R] with alpha (255 for RGB files), label float32 [25]).

    With xflip, indices [N, 2N) are the mirrored images with mirrored cameras.
    Construction reads only dataset.json; call `check_dataset` first to validate the images.
    """

    def __init__(self, path: str | os.PathLike, xflip: bool = False):
        self.path = str(path)
        self._source = _open_source(path)
        entries = read_labels(self._source)
        self.names = [name for name, _ in entries]
        labels = torch.tensor([label for _, label in entries], dtype=torch.float32)  # [N, 25]
        self.xflip = xflip
        if xflip:
            cam2world, K_norm = labels_to_cameras(labels)
            labels = torch.cat([labels, cameras_to_labels(mirror_cameras(cam2world), K_norm)])
        self.labels = labels  # [N or 2N, 25]
        first = decode_image(self._source.read(self.names[0]), self._source.where(self.names[0]))
        self.resolution = first.shape[0]
        self.name = Path(self.path).stem

    @property
    def num_files(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        file_index = index % self.num_files
        name = self.names[file_index]
        image = decode_image(self._source.read(name), self._source.where(name))
        if image.shape[2] == 3:
            image = np.concatenate([image, np.full_like(image[:, :, :1], 255)], axis=2)
        if index >= self.num_files:
            image = image[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), self.labels[index]


def composite(
    images: torch.Tensor,  # uint8 [B, 4, R, R]
    background: torch.Tensor,  # [B, 3] colours in [0, 1]
) -> torch.Tensor:  # float [B, 3, R, R] in [-1, 1], what D sees
    """RGBA over a background colour, scaled to [-1, 1]."""
    x = images.float() / 255
    rgb, alpha = x[:, :3], x[:, 3:]
    rgb = rgb * alpha + background[:, :, None, None] * (1 - alpha)
    return rgb * 2 - 1


def real_images(dataset: ImageDataset, indices, resolution: int) -> torch.Tensor:  # -> [n, 3, R, R] in [-1, 1]
    """Items `indices` of `dataset` (RGBA uint8) over white, area-resized to `resolution`: the reals that
    gsgan-metrics and training's SWD compare with generated images (`models.sampling.fake_images`)."""
    images = composite(torch.stack([dataset[int(i)][0] for i in indices]), torch.ones(len(indices), 3))
    if images.shape[-1] != resolution:
        images = torch.nn.functional.interpolate(images, size=(resolution, resolution), mode="area")
    return images
