"""What an inversion fits: the image (RGB or RGBA, resized to the generator's resolution) and its camera.

    load_image(path, resolution)      -> Target (a batch of one)
    target_from_array(array, ...)     -> Target, from a numpy image (a GUI's pasted image, a rendering)
    read_label(path, image_name)      -> the 25-value EG3D camera label [25] (float32)
    check_label(values, where)        -> the same checks, for a label from elsewhere

A label file is JSON in one of three shapes: a list of 25 numbers; {"label": [25 numbers]}; or an
EG3D dataset.json, {"labels": [["img.png", [25 numbers]], ...]}, from which the entry named like the
image is taken (the only entry if there is just one). The 25 numbers are the 4x4 cam2world matrix
(row-major, OpenCV axes) then the 3x3 intrinsics normalised by the image size (gsgan_core/cameras.py).
Every problem is a typed error naming the file: ImageError, LabelError.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gsgan_core.errors import PathError

LABEL_TOLERANCE = 1e-3  # on R^T R - I, det R - 1 and the bottom rows (hand-written labels have few digits)
OPAQUE = 254.5 / 255  # an alpha channel whose every pixel is at least this is no mask


class ImageError(PathError):
    """An image to invert cannot be read or used (not an image, not square, fully transparent, ...)."""


class LabelError(PathError):
    """A camera label file cannot be read, or what it holds is not an EG3D camera."""


@dataclass
class Target:
    """A batch of images to fit, at the generator's resolution, on the device of their tensors."""

    rgb: Tensor  # [B, 3, R, R] straight (not premultiplied) colour in [0, 1]
    alpha: Tensor | None  # [B, 1, R, R] coverage in [0, 1]; None for RGB images (no mask)
    names: tuple[str, ...] = ()  # where each image came from (files, "<array>")

    @property
    def batch_size(self) -> int:
        return self.rgb.shape[0]

    @property
    def resolution(self) -> int:
        return self.rgb.shape[-1]

    def to(self, device: torch.device | str) -> "Target":
        return Target(self.rgb.to(device), None if self.alpha is None else self.alpha.to(device), self.names)

    def composite(self, background: Tensor) -> Tensor:  # background [B, 3] or [3] -> [B, 3, R, R]
        """The images over a background colour, as a renderer draws them."""
        if self.alpha is None:
            return self.rgb
        bg = background.to(self.rgb).reshape(-1, 3, 1, 1)
        return self.rgb * self.alpha + bg * (1 - self.alpha)

    def select(self, index: int | slice | Sequence[int]) -> "Target":
        """Some of the batch, still batched: target.select(3) is a batch of one."""
        idx = [index] if isinstance(index, int) else index
        names = tuple(np.array(self.names, dtype=object)[idx].tolist()) if self.names else ()
        return Target(self.rgb[idx], None if self.alpha is None else self.alpha[idx], names)

    def rgba_uint8(self, index: int = 0) -> np.ndarray:  # [R, R, 4] or [R, R, 3]
        """Image `index` as 8-bit pixels (what an inversion file stores and a panel shows)."""
        planes = self.rgb[index] if self.alpha is None else torch.cat([self.rgb[index], self.alpha[index]])
        return (planes.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()

    @staticmethod
    def stack(targets: Sequence["Target"]) -> "Target":
        """One batch of several targets of one resolution; all with alpha or all without."""
        if not targets:
            raise ValueError("no targets to stack")
        with_alpha = {t.alpha is not None for t in targets}
        if len(with_alpha) != 1:
            raise ValueError("cannot stack RGB and RGBA targets into one batch")
        alpha = torch.cat([t.alpha for t in targets]) if with_alpha.pop() else None
        return Target(torch.cat([t.rgb for t in targets]), alpha, tuple(n for t in targets for n in t.names))


# ====================================================================== images
def _as_float(array: np.ndarray, where: str) -> np.ndarray:  # -> float32 [H, W, C] in [0, 1]
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise ImageError(where, "has pixels that are NaN or infinite")
        if values.min() < -1.0 or values.max() > 2.0:  # 0..255 as floats, say: not a small overshoot
            raise ImageError(where, f"has floating-point pixels in [{values.min():.3g}, {values.max():.3g}]; "
                                    "[0, 1] expected")
        return values.clip(0, 1)  # a renderer's colours overshoot 1 a little
    raise ImageError(where, f"has pixels of type {array.dtype}; 8 or 16-bit RGB or RGBA expected")


def target_from_array(array: np.ndarray, resolution: int, name: str = "<array>") -> Target:
    """A Target from an image array [H, W], [H, W, 1|2|3|4] (gray, gray+alpha, RGB, RGBA), uint8/uint16 or
    float in [0, 1], resized to `resolution` (colour is resized premultiplied, so edges do not fringe)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageError(name, f"has shape {list(array.shape)}; an RGB or RGBA image [H, W, 3 or 4] expected")
    h, w, channels = array.shape
    if h < 1 or w < 1:
        raise ImageError(name, f"is {w}x{h} pixels: empty")
    if h != w:
        raise ImageError(name, f"is {w}x{h} pixels; inversion needs a square image (crop it around the face the "
                               "way the training data was cropped, e.g. FFHQ's crop; see README, Inversion)")
    x = _as_float(array, name)
    if channels in (1, 2):  # gray (+ alpha) -> RGB (+ alpha)
        x = np.concatenate([x[:, :, :1].repeat(3, axis=2), x[:, :, 1:]], axis=2)
    pixels = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]  # [1, C, H, W]
    rgb, alpha = pixels[:, :3], (pixels[:, 3:] if pixels.shape[1] == 4 else None)
    if alpha is not None:
        if float(alpha.max()) <= 0:
            raise ImageError(name, "is fully transparent (its alpha channel is 0 everywhere)")
        if float(alpha.min()) >= OPAQUE:
            alpha = None  # opaque everywhere: an RGB image in an RGBA file, no mask
    if h != resolution:
        def resize(t: Tensor) -> Tensor:
            return F.interpolate(t, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)

        if alpha is None:
            rgb = resize(rgb)
        else:
            premultiplied, alpha = resize(rgb * alpha), resize(alpha).clamp(0, 1)
            rgb = torch.where(alpha > 1e-6, premultiplied / alpha.clamp_min(1e-6), torch.zeros_like(premultiplied))
    return Target(rgb.clamp(0, 1).contiguous(), None if alpha is None else alpha.contiguous(), (name,))


def read_image(path: str | os.PathLike) -> np.ndarray:  # [H, W, C] as stored
    """The pixels of an image file (PNG, JPEG, WebP, ...), or an ImageError naming it."""
    path = ImageError.check_file(path, "an image file")
    try:
        from PIL import Image

        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
                raise ImageError(path, f"has {image.n_frames} frames; one still image expected")
            image.load()
            has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image).astype(np.float64)
                array = (array / (65535.0 if array.max() > 255 else 255.0)).clip(0, 1).astype(np.float32)
            else:
                array = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    except ImageError:
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise ImageError(path, f"cannot be read as an image ({reason})") from None
    except Exception as err:  # Pillow raises many kinds; all mean "not a readable image"
        raise ImageError(path, f"cannot be read as an image ({type(err).__name__}: {err})") from None
    return array


def load_image(path: str | os.PathLike, resolution: int) -> Target:
    """An image file as a Target of one, at `resolution` (ImageError naming the file on any problem)."""
    return target_from_array(read_image(path), resolution, str(path))


# ====================================================================== camera labels
def check_label(values, where: str | os.PathLike) -> Tensor:  # -> float32 [25]
    """25 finite numbers that form an EG3D camera, as a tensor; else a LabelError naming `where`."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().flatten().tolist()
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise LabelError(where, "a camera label must be a list of 25 numbers")
    if len(values) != 25:
        raise LabelError(where, f"the label has {len(values)} numbers; an EG3D camera label has 25 "
                                "(the 4x4 cam2world matrix row by row, then the 3x3 normalised intrinsics)")
    label = np.array(values, dtype=np.float64)
    if not np.isfinite(label).all():
        entry = int(np.flatnonzero(~np.isfinite(label))[0])
        raise LabelError(where, f"entry {entry} of the label is not a finite number")
    cam2world, K = label[:16].reshape(4, 4), label[16:].reshape(3, 3)
    if np.abs(cam2world[3] - (0, 0, 0, 1)).max() > LABEL_TOLERANCE:
        raise LabelError(where, f"cam2world's bottom row is {cam2world[3].tolist()}, not [0, 0, 0, 1]")
    R = cam2world[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > LABEL_TOLERANCE or abs(np.linalg.det(R) - 1) > LABEL_TOLERANCE:
        raise LabelError(where, "cam2world's 3x3 part is not a rotation (orthonormal, det +1)")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise LabelError(where, f"focal lengths fx = {K[0, 0]:g}, fy = {K[1, 1]:g} (entries 16 and 20) must be positive")
    if np.abs(K[2] - (0, 0, 1)).max() > LABEL_TOLERANCE:
        raise LabelError(where, f"the intrinsics' bottom row is {K[2].tolist()}, not [0, 0, 1]")
    if not (0 < K[0, 2] < 1 and 0 < K[1, 2] < 1):
        raise LabelError(where, f"principal point cx = {K[0, 2]:g}, cy = {K[1, 2]:g} (entries 18 and 21): the "
                                "intrinsics must be normalised by the image size "
                                "(FFHQ: fx = fy = 4.2647, cx = cy = 0.5); "
                                "divide the first two rows of a pixel K by the image width and height")
    return torch.tensor(label, dtype=torch.float32)


def read_label(path: str | os.PathLike, image_name: str | os.PathLike | None = None) -> Tensor:  # [25]
    """The camera label in a JSON file (see the module docstring for its three shapes)."""
    path = LabelError.check_file(path, "a label file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise LabelError(path, f"is not valid JSON ({type(err).__name__}: {str(err)[:120]})") from None
    except OSError as err:
        raise LabelError(path, f"cannot be read ({err.strerror or err})") from None
    if isinstance(data, dict) and "label" in data:
        data = data["label"]
    elif isinstance(data, dict) and "labels" in data:
        data = _dataset_entry(data["labels"], path, image_name)
    elif isinstance(data, dict):
        raise LabelError(path, 'expected a list of 25 numbers, {"label": [...]}, or a dataset.json '
                               '{"labels": [["img.png", [...]], ...]}')
    return check_label(data, path)


def _dataset_entry(labels, path: Path, image_name) -> list:
    if isinstance(labels, dict):  # {name: label}: some tools write this
        labels = [[k, v] for k, v in labels.items()]
    if not isinstance(labels, list) or not labels or not all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) for e in labels
    ):
        raise LabelError(path, '"labels" must be a non-empty list of ["file name", [25 numbers]] pairs')
    if len(labels) == 1:
        return labels[0][1]
    if image_name is None:
        raise LabelError(path, f"holds {len(labels)} labels; name the image to pick one")
    wanted = PurePath(str(image_name)).name
    matches = [label for name, label in labels if name == str(image_name) or PurePath(name).name == wanted]
    if not matches:
        raise LabelError(path, f"has no label for {wanted} (its {len(labels)} entries name other files)")
    if len(matches) > 1:
        raise LabelError(path, f"has {len(matches)} labels for {wanted}; give the image's path as dataset.json names it")
    return matches[0]


def label_json(label: Tensor, image_name: str = "image.png") -> str:
    """A dataset.json holding one label: what `read_label` reads back (and `gsgan-invert --camera` takes)."""
    values = [float(v) for v in label.detach().cpu().double().flatten()]
    return json.dumps({"labels": [[image_name, [round(v, 7) + 0.0 for v in values]]]}, indent=None)
