"""EG3D-format datasets: a folder or a .zip of images plus `dataset.json` with camera labels.

    dataset.json = {"labels": [["img00000000.png", [25 floats]], ...]}

The 25 floats are the cam2world matrix (row-major, OpenCV axes) then the normalised intrinsics
(see gsgan_core/cameras.py). Images are RGB or RGBA PNG/JPEG, all square and of one size. RGBA
alpha is kept so that training can composite reals on a random background colour.

`check_dataset` opens every image once before training starts, so a broken file is reported by
name up front instead of crashing a run hours in. `ImageDataset` reads items lazily (each worker
process opens the zip itself) and can append x-flipped copies with their mirrored cameras.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gsgan_core.cameras import cameras_to_labels, labels_to_cameras, mirror_cameras
from gsgan_core.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LABEL_FILE = "dataset.json"


# ====================================================================== raw access (folder or zip)
class _Source:
    """Reads named files from a folder or a zip; the zip is opened lazily, once per process."""

    def __init__(self, path: Path):
        self.path = path
        self.is_zip = path.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():  # a forked worker must not share the handle
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def names(self) -> set[str]:
        if self.is_zip:
            return {n for n in self._zipfile().namelist() if not n.endswith("/")}
        return {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}

    def read(self, name: str) -> bytes:
        if self.is_zip:
            return self._zipfile().read(name)
        return (self.path / name).read_bytes()

    def where(self, name: str) -> str:
        """How to name a file inside the dataset in a message."""
        return f"{self.path}:{name}" if self.is_zip else str(self.path / name)

    def __getstate__(self):  # picklable for DataLoader workers: drop the open handle
        return {"path": self.path, "is_zip": self.is_zip, "_zip": None, "_zip_pid": None}


def _open_source(path: str | os.PathLike) -> _Source:
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "not found (expected a folder or a .zip with dataset.json and images)")
    if path.is_file() and not zipfile.is_zipfile(path):
        raise DatasetError(path, "is a file but not a zip archive (expected a folder or a .zip)")
    return _Source(path)


def decode_image(data: bytes, where: str) -> np.ndarray:  # -> uint8 [H, W, 3 or 4]
    import imageio.v3 as iio

    try:
        # pillow only: trying every imageio plugin on a broken file is slow and noisy
        image = iio.imread(io.BytesIO(data), plugin="pillow")
    except Exception as err:  # imageio raises many kinds; all mean "not a readable image"
        raise DatasetError(where, f"cannot be decoded as an image ({type(err).__name__}: {err})") from None
    if image.ndim == 4:  # an animated PNG/GIF: not a training image
        raise DatasetError(where, f"has {image.shape[0]} frames; one still image expected")
    if image.dtype != np.uint8:
        raise DatasetError(where, f"has pixel type {image.dtype}; 8-bit RGB or RGBA expected")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DatasetError(where, f"has shape {image.shape}; an RGB or RGBA image expected")
    return image


# ====================================================================== labels
def read_labels(source: _Source) -> list[tuple[str, list[float]]]:
    """The (file name, 25 floats) pairs of dataset.json, every one checked."""
    where = source.where(LABEL_FILE)
    try:
        raw = source.read(LABEL_FILE)
    except (KeyError, FileNotFoundError):
        raise DatasetError(where, "missing: every dataset needs a dataset.json with camera labels") from None
    except OSError as err:
        raise DatasetError(where, f"cannot be read ({err})") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(where, f"is not valid JSON ({err})") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, list):
        raise DatasetError(where, 'has no "labels" list (expected {"labels": [["img.png", [25 floats]], ...]})')
    if not labels:
        raise DatasetError(where, "is empty: the dataset has no images")
    out, seen = [], set()
    for i, entry in enumerate(labels):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DatasetError(where, f"labels[{i}] is not a [file name, label] pair: {str(entry)[:80]}")
        name, label = entry
        if name in seen:
            raise DatasetError(where, f"labels[{i}]: {name} is listed twice")
        seen.add(name)
        if (
            not isinstance(label, list)
            or len(label) != 25
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in label)
        ):
            size = len(label) if isinstance(label, list) else type(label).__name__
            raise DatasetError(where, f"the label of {name} is not 25 finite numbers (got {size})")
        out.append((name, [float(v) for v in label]))
    return out


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

    Checks: dataset.json present and well-formed, each label 25 finite numbers, each image present
    and decodable, all images square and of one size, and at least one image. Images are decoded
    by `processes` worker processes (None: every core; small datasets: this process).
    """
    from multiprocessing import get_context

    from tqdm import tqdm

    source = _open_source(path)
    labels = read_labels(source)
    present = source.names()
    for name, _ in labels:
        if name not in present:
            raise DatasetError(source.where(name), "is listed in dataset.json but missing")
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
