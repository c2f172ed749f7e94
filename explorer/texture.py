"""The CPU side of showing a frame: uint8 RGB -> the float32 RGBA buffer a Dear PyGui raw texture reads.

Kept out of the GUI module so the benchmark can time it on a machine without dearpygui.
"""

from __future__ import annotations

import numpy as np


def new_rgba_buffer(width: int, height: int) -> np.ndarray:  # [H, W, 4] float32, opaque black
    buffer = np.zeros((height, width, 4), dtype=np.float32)
    buffer[..., 3] = 1.0
    return buffer


def to_rgba(image: np.ndarray, out: np.ndarray) -> np.ndarray:
    """image [H, W, 3] uint8 -> out [H, W, 4] float32 in [0, 1], in place (alpha stays 1).

    A raw texture keeps reading the same buffer, so writing into it is the whole upload on the
    CPU side; no new array per frame.
    """
    if image.shape[:2] != out.shape[:2]:
        raise ValueError(f"image {image.shape} does not fit texture buffer {out.shape}")
    np.multiply(image, np.float32(1.0 / 255.0), out=out[..., :3], casting="unsafe")
    return out
