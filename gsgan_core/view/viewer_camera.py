"""The viewer's orbit camera: matrices from a `CameraState`, and the mouse gestures that edit one.

A viewer orbits around the point it looks at, so here the eye sits at `radius` from the pivot.
(The core's `orbit_camera` follows EG3D and keeps the eye at `radius` from the world origin;
`camera_from_orbit_pose` converts a checkpoint's default camera into the same view.)
Gestures return a new (frozen) `CameraState`; they never touch the generator.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from gsgan_core.cameras import OrbitPose, intrinsics_from_fov, look_at

from .state import CameraState

PITCH_LIMIT = math.pi / 2 - 1e-3  # stay off the poles, where "up" is undefined
RADIUS_RANGE = (0.05, 100.0)
ORBIT_RADIANS_PER_PIXEL = 0.01
ZOOM_PER_WHEEL_STEP = 0.9


def _direction(yaw: float, pitch: float) -> np.ndarray:  # [3] unit vector from the pivot to the eye
    return np.array([math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)])


def eye_position(camera: CameraState) -> np.ndarray:  # [3]
    return np.asarray(camera.pivot, dtype=np.float64) + camera.radius * _direction(camera.yaw, camera.pitch)


def viewer_cameras(
    camera: CameraState, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:  # cam2world [4, 4], K_norm [3, 3] (EG3D/OpenCV convention, float32)
    eye = torch.tensor(eye_position(camera), dtype=torch.float32, device=device)
    pivot = torch.tensor(camera.pivot, dtype=torch.float32, device=device)
    return look_at(eye, pivot), intrinsics_from_fov(float(camera.fov_deg), device=device, dtype=torch.float32)


def camera_from_orbit_pose(pose: OrbitPose) -> CameraState:
    """The viewer camera that sees exactly what `orbit_camera(pose)` sees (same eye, pivot and fov)."""
    pivot = np.asarray(pose.pivot, dtype=np.float64)
    eye = pose.radius * _direction(pose.yaw, pose.pitch)  # EG3D: on a sphere around the origin
    offset = eye - pivot
    radius = float(np.linalg.norm(offset))
    if radius < 1e-6:  # a pose whose eye is the pivot; keep the numbers usable
        return CameraState(pose.yaw, pose.pitch, pose.radius, tuple(pose.pivot), pose.fov_deg)
    d = offset / radius
    yaw = math.atan2(d[0], d[2])
    pitch = math.asin(max(-1.0, min(1.0, d[1])))
    return CameraState(yaw=yaw, pitch=pitch, radius=radius, pivot=tuple(float(v) for v in pivot), fov_deg=pose.fov_deg)


# --------------------------------------------------------------------------- gestures
def orbit(camera: CameraState, dx: float, dy: float) -> CameraState:
    """Left-drag by (dx, dy) pixels: the object turns with the mouse."""
    pitch = max(-PITCH_LIMIT, min(PITCH_LIMIT, camera.pitch + dy * ORBIT_RADIANS_PER_PIXEL))
    return dataclasses.replace(camera, yaw=camera.yaw - dx * ORBIT_RADIANS_PER_PIXEL, pitch=pitch)


def pan(camera: CameraState, dx: float, dy: float, viewport_height: int) -> CameraState:
    """Right/middle-drag by (dx, dy) pixels: the pivot moves so the scene follows the mouse."""
    cam2world, _ = viewer_cameras(camera)
    right, down = cam2world[:3, 0].double().numpy(), cam2world[:3, 1].double().numpy()
    world_per_pixel = 2.0 * camera.radius * math.tan(math.radians(camera.fov_deg) / 2) / max(viewport_height, 1)
    pivot = np.asarray(camera.pivot) - world_per_pixel * (dx * right + dy * down)
    return dataclasses.replace(camera, pivot=tuple(float(v) for v in pivot))


def zoom(camera: CameraState, wheel_steps: float) -> CameraState:
    """Mouse wheel: each step up moves 10% closer to the pivot."""
    radius = camera.radius * ZOOM_PER_WHEEL_STEP**wheel_steps
    return dataclasses.replace(camera, radius=max(RADIUS_RANGE[0], min(RADIUS_RANGE[1], radius)))


def snap_front(camera: CameraState) -> CameraState:
    return dataclasses.replace(camera, yaw=0.0, pitch=0.0)
