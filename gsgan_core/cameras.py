"""Cameras in the EG3D convention: cam2world matrices with OpenCV axes and normalised intrinsics.

Conventions (the ones EG3D's datasets and checkpoints use, see the reference's section 6):

- A camera *label* is 25 floats: the 4x4 cam2world matrix (row-major) then the 3x3 intrinsics
  normalised by the image size (FFHQ: fx = fy = 4.2647, cx = cy = 0.5).
- Camera axes are OpenCV's: x right, y down, z forward. The columns of cam2world's rotation
  are therefore (right, down, forward) in world coordinates, and its translation is the eye.
- World: +y is up, a frontal face looks toward +z. FFHQ cameras sit at radius 2.7 from the
  world origin and look at the pivot (0, 0, 0.2).

Every function works on any device and dtype and broadcasts over leading batch dimensions `...`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from .errors import CameraError

FFHQ_FOCAL = 4.2647  # normalised focal length of EG3D's FFHQ labels
FFHQ_FOV_DEG = math.degrees(2.0 * math.atan(1.0 / (2.0 * FFHQ_FOCAL)))  # ~13.37 degrees
FFHQ_RADIUS = 2.7
FFHQ_PIVOT = (0.0, 0.0, 0.2)

# Camera models: how a camera (cam2world + label intrinsics) becomes the rasterizer's view.
#   "label": the label's intrinsics, the rigid inverse of cam2world (EG3D, gsgan's own generators).
#   "gsgan": what the official GSGAN renderer does: it passes 12.96 (EG3D's field of view in degrees)
#            to tan() as radians, so every camera has a ~22.56 degree field of view whatever its label
#            says, and it negates the x component of the world-to-camera translation (visible when the
#            camera does not look at the origin, e.g. FFHQ's pivot (0, 0, 0.2)).
CAMERA_MODELS = ("label", "gsgan")
GSGAN_TAN_HALF_FOV = math.tan(12.96 / 2)
GSGAN_FOCAL = 0.5 / GSGAN_TAN_HALF_FOV  # ~2.508 image widths (EG3D's FFHQ labels say 4.2647)
GSGAN_FOV_DEG = math.degrees(2 * math.atan(GSGAN_TAN_HALF_FOV))  # ~22.56 degrees

Scalar = float | Tensor
Vec3 = Sequence[float] | Tensor


# --------------------------------------------------------------------------- helpers
def _float_dtype(*values: Any, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype to compute in: the one asked for, else the first floating tensor's, else default."""
    if dtype is not None:
        return dtype
    for value in values:
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.dtype
    return torch.get_default_dtype()


def _device(*values: Any, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for value in values:
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")


def _tensor(value: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.as_tensor(value, dtype=dtype, device=device)


def _check_last_dims(name: str, value: Tensor, dims: tuple[int, ...]) -> None:
    if value.dim() < len(dims) or tuple(value.shape[-len(dims):]) != dims:
        wanted = "[..., " + ", ".join(str(d) for d in dims) + "]"
        raise CameraError(f"{name} must have shape {wanted}, got {list(value.shape)}")


def _safe_normalize(v: Tensor, eps: float = 1e-12) -> Tensor:  # [..., 3] -> [..., 3]
    # clamp instead of F.normalize's max(norm, eps) only to keep the intent explicit: never NaN
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def _assemble(rotation: Tensor, translation: Tensor) -> Tensor:
    """[..., 3, 3], [..., 3] -> [..., 4, 4] homogeneous rigid transform."""
    batch = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    out = torch.zeros(*batch, 4, 4, dtype=rotation.dtype, device=rotation.device)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


# --------------------------------------------------------------------------- labels
def labels_to_cameras(labels: Tensor) -> tuple[Tensor, Tensor]:
    """EG3D labels [..., 25] -> (cam2world [..., 4, 4], K_norm [..., 3, 3]).

    Lists and numpy arrays are accepted and converted with their own dtype.
    """
    labels = torch.as_tensor(labels)
    _check_last_dims("camera labels", labels, (25,))
    if not labels.is_floating_point():
        labels = labels.to(torch.get_default_dtype())
    batch = labels.shape[:-1]
    cam2world = labels[..., :16].reshape(*batch, 4, 4)
    K_norm = labels[..., 16:].reshape(*batch, 3, 3)
    return cam2world, K_norm


def cameras_to_labels(cam2world: Tensor, K_norm: Tensor) -> Tensor:
    """(cam2world [..., 4, 4], K_norm [..., 3, 3]) -> EG3D labels [..., 25]; batch dims broadcast."""
    _check_last_dims("cam2world", cam2world, (4, 4))
    _check_last_dims("K_norm", K_norm, (3, 3))
    try:
        batch = torch.broadcast_shapes(cam2world.shape[:-2], K_norm.shape[:-2])
    except RuntimeError as e:
        raise CameraError(
            f"cam2world {list(cam2world.shape)} and K_norm {list(K_norm.shape)} have incompatible batch shapes"
        ) from e
    flat_pose = cam2world.expand(*batch, 4, 4).reshape(*batch, 16)
    flat_K = K_norm.to(cam2world.dtype).expand(*batch, 3, 3).reshape(*batch, 9)
    return torch.cat([flat_pose, flat_K], dim=-1)


# --------------------------------------------------------------------------- intrinsics
def intrinsics_from_fov(
    fov_deg: Scalar,  # [...] full field of view in degrees, same along x and y
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:  # K_norm [..., 3, 3]
    """Normalised intrinsics of a pinhole camera with a centred principal point.

    fx = fy = 1 / (2 tan(fov / 2)) in units of the image size, cx = cy = 0.5.
    """
    dtype = _float_dtype(fov_deg, dtype=dtype)
    device = _device(fov_deg, device=device)
    fov = _tensor(fov_deg, dtype, device)
    if not bool(((fov > 0) & (fov < 180)).all()):
        raise CameraError(f"field of view must be in (0, 180) degrees, got {fov.tolist()}")
    focal = 0.5 / torch.tan(torch.deg2rad(fov) / 2)  # [...]
    K = torch.zeros(*fov.shape, 3, 3, dtype=dtype, device=device)
    K[..., 0, 0] = focal
    K[..., 1, 1] = focal
    K[..., 0, 2] = 0.5
    K[..., 1, 2] = 0.5
    K[..., 2, 2] = 1.0
    return K


def fov_from_intrinsics(K_norm: Tensor) -> Tensor:  # [..., 3, 3] -> [...] degrees
    """Vertical field of view in degrees, from the normalised fy (fx for the horizontal one)."""
    K_norm = torch.as_tensor(K_norm)
    _check_last_dims("K_norm", K_norm, (3, 3))
    return torch.rad2deg(2 * torch.atan(0.5 / K_norm[..., 1, 1]))


# --------------------------------------------------------------------------- poses
def look_at(
    eye: Vec3,  # [..., 3] camera position
    target: Vec3,  # [..., 3] point the camera looks at
    up: Vec3 = (0.0, 1.0, 0.0),  # [..., 3] world up; the image's "up" (-y) leans toward it
) -> Tensor:  # cam2world [..., 4, 4], columns (right, down, forward, eye)
    """cam2world of a camera at `eye` looking at `target`, in the OpenCV/EG3D convention.

    Same construction as EG3D's `create_cam2world_matrix`: right = forward x up, down =
    forward x right, so the rotation is proper (det +1). When forward is parallel to up
    (looking straight down or up) forward x up vanishes; instead of dividing by zero we take
    `right` from the world axis least aligned with `up` (x for the default up). For the
    default up this is the limit of a camera orbiting over the pole from the +z side, so the
    image does not spin as an orbit camera reaches the top. eye == target gives a
    degenerate (but finite) matrix.
    """
    dtype = _float_dtype(eye, target, up, dtype=None)
    device = _device(eye, target, up, device=None)
    eye, target, up = (_tensor(v, dtype, device) for v in (eye, target, up))
    for name, v in (("eye", eye), ("target", target), ("up", up)):
        _check_last_dims(name, v, (3,))

    forward, up, eye = torch.broadcast_tensors(_safe_normalize(target - eye), _safe_normalize(up), eye)  # [..., 3]

    right = torch.cross(forward, up, dim=-1)  # [..., 3], zero length when forward || up
    # Fallback right: the world axis least aligned with up, made orthogonal to forward.
    axis = torch.nn.functional.one_hot(up.abs().argmin(dim=-1), 3).to(dtype)  # [..., 3]
    fallback = axis - (axis * forward).sum(-1, keepdim=True) * forward
    # |forward x up| = sin(angle); below sqrt(eps) its direction is mostly rounding noise
    degenerate = right.norm(dim=-1, keepdim=True) < torch.finfo(dtype).eps ** 0.5  # [..., 1]
    right = _safe_normalize(torch.where(degenerate, fallback, right))
    down = torch.cross(forward, right, dim=-1)  # already unit: forward and right are orthonormal

    rotation = torch.stack([right, down, forward], dim=-1)  # [..., 3, 3], columns
    return _assemble(rotation, eye)


def orbit_camera(
    yaw: Scalar = 0.0,  # [...] radians; positive moves the camera toward +x
    pitch: Scalar = 0.0,  # [...] radians; positive raises the camera (it then looks down)
    radius: Scalar = FFHQ_RADIUS,  # [...] distance of the camera from the world origin
    pivot: Vec3 = FFHQ_PIVOT,  # [..., 3] point the camera looks at
    fov_deg: Scalar = FFHQ_FOV_DEG,  # [...] full field of view in degrees
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:  # cam2world [..., 4, 4], K_norm [..., 3, 3]
    """A camera on a sphere around the world origin, looking at `pivot`; yaw=pitch=0 is frontal.

    eye = radius * (cos(pitch) sin(yaw), sin(pitch), cos(pitch) cos(yaw)), so yaw=0, pitch=0
    sits on +z facing the face. Like EG3D's LookAtPoseSampler the sphere is centred on the
    world origin, not on the pivot (for FFHQ the camera is 2.7 from the origin and looks at
    (0, 0, 0.2)); with a pivot at the origin (AFHQ) it is a true orbit.

    Relation to LookAtPoseSampler.sample(horizontal, vertical, pivot, radius): its origin is
    r * (sin(phi) cos(pi - theta), cos(phi), sin(phi) sin(pi - theta)) with theta = horizontal
    and phi = arccos(1 - 2 vertical / pi). Here theta = pi/2 + yaw and phi = pi/2 - pitch, so a
    level view (vertical = pi/2) is identical. Note EG3D's `vertical = pi/2 + a` moves the
    camera *down* for a > 0 and not linearly; `pitch` is a plain elevation angle instead.
    All arguments broadcast together; K_norm is expanded to the same batch shape.
    """
    dtype = _float_dtype(yaw, pitch, radius, pivot, fov_deg, dtype=dtype)
    device = _device(yaw, pitch, radius, pivot, fov_deg, device=device)
    yaw, pitch, radius, fov = (_tensor(v, dtype, device) for v in (yaw, pitch, radius, fov_deg))
    pivot = _tensor(pivot, dtype, device)
    _check_last_dims("pivot", pivot, (3,))
    if not bool((radius > 0).all()):
        raise CameraError(f"orbit radius must be positive, got {radius.tolist()}")

    direction = torch.stack(
        torch.broadcast_tensors(pitch.cos() * yaw.sin(), pitch.sin() * torch.ones_like(yaw), pitch.cos() * yaw.cos()),
        dim=-1,
    )  # [..., 3] unit vector from the origin to the camera
    eye = radius.unsqueeze(-1) * direction
    cam2world = look_at(eye, pivot)
    K_norm = intrinsics_from_fov(fov)
    batch = torch.broadcast_shapes(cam2world.shape[:-2], K_norm.shape[:-2])
    return cam2world.expand(*batch, 4, 4), K_norm.expand(*batch, 3, 3)


@dataclass(frozen=True)
class OrbitPose:
    """An orbit camera as plain numbers: what checkpoints store as the viewer's default camera.

    Fields mean what they mean for `orbit_camera`: angles in radians, fov in degrees. The
    explorer edits a copy with `dataclasses.replace`.
    """

    yaw: float = 0.0
    pitch: float = 0.0
    radius: float = FFHQ_RADIUS
    pivot: tuple[float, float, float] = FFHQ_PIVOT
    fov_deg: float = FFHQ_FOV_DEG

    def __post_init__(self) -> None:
        def number(name: str, value: Any) -> float:
            # bool is an int in Python, but True as an angle is certainly a mistake
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CameraError(f"OrbitPose.{name} must be a finite number, got {value!r}")
            return float(value)

        for name in ("yaw", "pitch", "radius", "fov_deg"):
            object.__setattr__(self, name, number(name, getattr(self, name)))
        pivot = self.pivot
        if isinstance(pivot, (str, bytes)) or not isinstance(pivot, Sequence) or len(pivot) != 3:
            raise CameraError(f"OrbitPose.pivot must be 3 numbers, got {pivot!r}")
        object.__setattr__(self, "pivot", tuple(number("pivot", v) for v in pivot))
        if self.radius <= 0:
            raise CameraError(f"OrbitPose.radius must be positive, got {self.radius}")
        if not 0 < self.fov_deg < 180:
            raise CameraError(f"OrbitPose.fov_deg must be in (0, 180), got {self.fov_deg}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: floats and a list of 3 floats."""
        return {
            "yaw": self.yaw,
            "pitch": self.pitch,
            "radius": self.radius,
            "pivot": list(self.pivot),
            "fov_deg": self.fov_deg,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "OrbitPose":
        """Inverse of `to_dict`. Every field is required and unknown keys are refused (CameraError)."""
        if not isinstance(data, dict):
            raise CameraError(f"an orbit pose must be a dict, got {type(data).__name__}")
        names = tuple(f.name for f in dataclasses.fields(cls))
        missing = [n for n in names if n not in data]
        if missing:
            raise CameraError(f"orbit pose is missing {', '.join(missing)}")
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise CameraError(f"orbit pose has unknown keys {', '.join(unknown)}")
        return cls(**{n: data[n] for n in names})

    @classmethod
    def from_labels(cls, labels: Tensor) -> "OrbitPose":  # labels: [N, 25] of one dataset
        """The frontal orbit pose that fits a dataset's cameras: the pivot is the point nearest to every
        optical axis (least squares), the radius the median distance of the cameras from the origin
        (EG3D's convention), the fov that of the first camera."""
        cam2world, K_norm = labels_to_cameras(labels.detach().cpu().double())
        eyes, forward = cam2world[:, :3, 3], cam2world[:, :3, 2]
        projector = torch.eye(3, dtype=eyes.dtype) - forward[:, :, None] * forward[:, None, :]  # [N, 3, 3]
        # minimise sum_i |P_i (x - eye_i)|^2; pinv gives the shortest x when all axes are parallel
        pivot = torch.linalg.pinv(projector.sum(0)) @ (projector @ eyes[:, :, None]).sum(0)
        fit = lambda x: round(float(x), 6) + 0.0  # labels are float32: no more digits are real  # noqa: E731
        return cls(pivot=tuple(fit(v) for v in pivot.flatten()), radius=fit(eyes.norm(dim=-1).median()),
                   fov_deg=fit(fov_from_intrinsics(K_norm[0])))

    def cameras(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:  # cam2world [4, 4], K_norm [3, 3] (unbatched)
        return orbit_camera(self.yaw, self.pitch, self.radius, self.pivot, self.fov_deg, device=device, dtype=dtype)


# --------------------------------------------------------------------------- samplers
def _standard_draws(
    n: int, generator: torch.Generator | None, device: torch.device | str | None, dtype: torch.dtype | None,
    kind: str,
) -> Tensor:  # [2, n] yaw and pitch draws, N(0, 1) or U(0, 1)
    if n < 0:
        raise CameraError(f"number of cameras must be >= 0, got {n}")
    # Draw where the generator lives (a CUDA generator cannot fill a CPU tensor), then move.
    draw_device = generator.device if generator is not None else device
    draw = torch.randn if kind == "normal" else torch.rand
    values = draw(2, n, generator=generator, device=draw_device, dtype=torch.float32 if dtype is None else dtype)
    return values.to(device=device if device is not None else values.device)


def sample_ffhq_like(
    n: int,
    yaw_std: float = 0.3,
    pitch_std: float = 0.155,
    radius: float = FFHQ_RADIUS,
    pivot: Vec3 = FFHQ_PIVOT,
    fov_deg: float = FFHQ_FOV_DEG,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:  # cam2world [n, 4, 4], K_norm [n, 3, 3]
    """Orbit cameras with yaw ~ N(0, yaw_std), pitch ~ N(0, pitch_std) around the frontal view.

    The defaults are EG3D's FFHQ stds (0.3 horizontal, 0.155 vertical), applied to plain
    angles. Deterministic for a seeded `generator`.
    """
    draws = _standard_draws(n, generator, device, dtype, "normal")
    return orbit_camera(draws[0] * yaw_std, draws[1] * pitch_std, radius, pivot, fov_deg, dtype=draws.dtype)


def sample_uniform(
    n: int,
    yaw_range: tuple[float, float] = (-math.pi / 2, math.pi / 2),
    pitch_range: tuple[float, float] = (-0.3, 0.3),
    radius: float = FFHQ_RADIUS,
    pivot: Vec3 = FFHQ_PIVOT,
    fov_deg: float = FFHQ_FOV_DEG,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:  # cam2world [n, 4, 4], K_norm [n, 3, 3]
    """Orbit cameras with yaw and pitch uniform in their ranges (radians)."""
    for name, (lo, hi) in (("yaw_range", yaw_range), ("pitch_range", pitch_range)):
        if not lo <= hi:
            raise CameraError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
    draws = _standard_draws(n, generator, device, dtype, "uniform")
    yaw = yaw_range[0] + (yaw_range[1] - yaw_range[0]) * draws[0]
    pitch = pitch_range[0] + (pitch_range[1] - pitch_range[0]) * draws[1]
    return orbit_camera(yaw, pitch, radius, pivot, fov_deg, dtype=draws.dtype)


# --------------------------------------------------------------------------- rasterizer side
def to_rasterizer(
    cam2world: Tensor,  # [..., 4, 4]
    K_norm: Tensor,  # [..., 3, 3]
    width: int,
    height: int,
    camera_model: str = "label",  # one of CAMERA_MODELS
) -> tuple[Tensor, Tensor]:  # viewmats [..., 4, 4] (world2cam), Ks [..., 3, 3] in pixels
    """What gsplat-style rasterizers take: world-to-camera matrices and intrinsics in pixels.

    The inverse is the rigid one (R^T, -R^T t): exact for rotations, cheaper and better
    conditioned than a general 4x4 inverse. camera_model "gsgan" reproduces the official GSGAN
    renderer instead (see CAMERA_MODELS): K_norm is replaced by its fixed intrinsics and the
    translation's x is negated.
    """
    _check_last_dims("cam2world", cam2world, (4, 4))
    _check_last_dims("K_norm", K_norm, (3, 3))
    if width <= 0 or height <= 0:
        raise CameraError(f"image size must be positive, got {width}x{height}")
    if camera_model not in CAMERA_MODELS:
        raise CameraError(f"unknown camera model {camera_model!r}; known: {', '.join(CAMERA_MODELS)}")
    rotation_t = cam2world[..., :3, :3].transpose(-1, -2)  # [..., 3, 3] world -> camera
    translation = -(rotation_t @ cam2world[..., :3, 3:4]).squeeze(-1)  # [..., 3]
    if camera_model == "gsgan":
        translation = translation * translation.new_tensor([-1.0, 1.0, 1.0])
        K_norm = intrinsics_from_fov(GSGAN_FOV_DEG, device=K_norm.device, dtype=K_norm.dtype).expand_as(K_norm)
    viewmats = _assemble(rotation_t, translation)
    scale = torch.tensor([width, height, 1.0], dtype=K_norm.dtype, device=K_norm.device)
    Ks = K_norm * scale.unsqueeze(-1)  # row 0 by width, row 1 by height
    return viewmats, Ks


def camera_forward(cam2world: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 3] unit viewing direction
    _check_last_dims("cam2world", cam2world, (4, 4))
    return _safe_normalize(cam2world[..., :3, 2])


def mirror_cameras(cam2world: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4]
    """The camera that sees the horizontally mirrored image, for x-flip augmentation.

    Flipping an image left-right is the same picture as reflecting the world across the plane
    x = 0 (M = diag(-1, 1, 1)) and photographing it with a camera whose image x axis is
    flipped too (F = diag(-1, 1, 1) in camera space): a point p at camera coordinates q moves to
    M p at camera coordinates F q, i.e. pixel u -> W - u. So R' = M R F and t' = M t. Two
    reflections make a rotation again (det +1). This is EG3D's `flip_yaw` (it negates
    label entries 1, 2, 3, 4, 8). The intrinsics are unchanged for a centred principal point
    (cx = 0.5, as in EG3D's labels); otherwise cx would become 1 - cx.
    """
    _check_last_dims("cam2world", cam2world, (4, 4))
    flip = torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=cam2world.dtype, device=cam2world.device)
    # diag(M, 1) @ C @ diag(F, 1): scale rows by M and columns by F
    return cam2world * flip.unsqueeze(-1) * flip
