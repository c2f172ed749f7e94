import math

import pytest
import torch

from gsgan_core.cameras import (
    FFHQ_FOCAL,
    FFHQ_FOV_DEG,
    OrbitPose,
    camera_forward,
    cameras_to_labels,
    fov_from_intrinsics,
    intrinsics_from_fov,
    labels_to_cameras,
    look_at,
    mirror_cameras,
    orbit_camera,
    sample_ffhq_like,
    sample_uniform,
    to_rasterizer,
)
from gsgan_core.errors import CameraError

D = torch.float64


def project(cam2world, K_norm, points, width=64, height=48):  # points [..., 3] -> pixels [..., 2]
    viewmat, K = to_rasterizer(cam2world, K_norm, width, height)
    cam = (viewmat[..., :3, :3] @ points.unsqueeze(-1)).squeeze(-1) + viewmat[..., :3, 3]
    pix = (K @ cam.unsqueeze(-1)).squeeze(-1)
    return pix[..., :2] / pix[..., 2:3]


def eg3d_lookat_pose(horizontal, vertical, pivot, radius):
    """EG3D's LookAtPoseSampler.sample + create_cam2world_matrix, written out independently."""
    vertical = min(max(vertical, 1e-5), math.pi - 1e-5)
    theta = horizontal
    phi = math.acos(1 - 2 * (vertical / math.pi))
    origin = torch.tensor(
        [
            radius * math.sin(phi) * math.cos(math.pi - theta),
            radius * math.cos(phi),
            radius * math.sin(phi) * math.sin(math.pi - theta),
        ],
        dtype=D,
    )
    forward = torch.nn.functional.normalize(torch.tensor(pivot, dtype=D) - origin, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=D)
    right = -torch.nn.functional.normalize(torch.linalg.cross(up, forward), dim=-1)
    up = torch.nn.functional.normalize(torch.linalg.cross(forward, right), dim=-1)
    pose = torch.eye(4, dtype=D)
    pose[:3, :3] = torch.stack([right, up, forward], dim=-1)
    pose[:3, 3] = origin
    return pose


# ----------------------------------------------------------------------------- labels
def test_label_round_trip():
    labels = torch.randn(2, 3, 25, dtype=D)
    cam2world, K = labels_to_cameras(labels)
    assert cam2world.shape == (2, 3, 4, 4) and K.shape == (2, 3, 3, 3)
    assert torch.equal(cam2world[1, 2].flatten(), labels[1, 2, :16])  # row-major
    assert torch.equal(cameras_to_labels(cam2world, K), labels)


def test_labels_wrong_shape():
    with pytest.raises(CameraError):
        labels_to_cameras(torch.zeros(4, 24))
    with pytest.raises(CameraError):
        cameras_to_labels(torch.zeros(4, 3, 4), torch.zeros(4, 3, 3))
    with pytest.raises(CameraError):
        cameras_to_labels(torch.zeros(4, 4, 4), torch.zeros(4, 2, 3))
    with pytest.raises(CameraError):
        cameras_to_labels(torch.zeros(4, 4, 4), torch.zeros(3, 3, 3))


def test_orbit_labels_match_ffhq_intrinsics():
    cam2world, K = orbit_camera(dtype=D)
    label = cameras_to_labels(cam2world, K)
    assert label.shape == (25,)
    assert label[16].item() == pytest.approx(FFHQ_FOCAL) and label[20].item() == pytest.approx(FFHQ_FOCAL)
    assert label[18].item() == 0.5 and label[21].item() == 0.5


# ----------------------------------------------------------------------------- look_at
def test_look_at_orthonormal_and_looks_at_target():
    torch.manual_seed(0)
    eye = torch.randn(16, 3, dtype=D) * 3
    target = torch.randn(16, 3, dtype=D)
    cam2world = look_at(eye, target)
    R = cam2world[:, :3, :3]
    assert torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3, dtype=D).expand(16, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(16, dtype=D))
    assert torch.equal(cam2world[:, :3, 3], eye)
    assert torch.equal(cam2world[:, 3], torch.tensor([0, 0, 0, 1.0], dtype=D).expand(16, 4))
    # the target projects onto the principal point, i.e. the image centre
    pix = project(cam2world, intrinsics_from_fov(30.0, dtype=D), target, width=64, height=48)
    assert torch.allclose(pix, torch.tensor([32.0, 24.0], dtype=D).expand(16, 2), atol=1e-9)
    # the target is in front of the camera
    assert (((target - eye) * camera_forward(cam2world)).sum(-1) > 0).all()


def test_look_at_keeps_world_up_at_the_top_of_the_image():
    cam2world = look_at(torch.tensor([0.0, 0.0, 3.0], dtype=D), torch.zeros(3, dtype=D))
    # OpenCV axes: the image's y axis points down, so world +y must map to negative image y
    assert torch.allclose(cam2world[:3, 1], torch.tensor([0.0, -1.0, 0.0], dtype=D))
    # facing -z with +y up, world +x is on the right of the image
    assert torch.allclose(cam2world[:3, 0], torch.tensor([1.0, 0.0, 0.0], dtype=D))
    above = project(cam2world, intrinsics_from_fov(30.0, dtype=D), torch.tensor([0.0, 0.5, 0.0], dtype=D))
    assert above[1] < 24  # above the centre row


@pytest.mark.parametrize("direction", [-1.0, 1.0])
def test_look_at_parallel_to_up_is_finite(direction):
    eye = torch.tensor([0.0, 5.0 * -direction, 0.0])  # straight down (direction -1) or up
    cam2world = look_at(eye, torch.zeros(3))
    assert torch.isfinite(cam2world).all()
    R = cam2world[:3, :3]
    assert torch.allclose(R.T @ R, torch.eye(3), atol=1e-6)
    assert torch.linalg.det(R).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(camera_forward(cam2world), torch.tensor([0.0, direction, 0.0]))
    # continuous with a camera approaching the pole from the frontal (+z) side
    near = look_at(torch.tensor([0.0, 5.0 * -direction, 1e-3]), torch.zeros(3))
    assert torch.allclose(near[:3, :3], R, atol=1e-3)
    # gradients stay finite through the fallback too
    eye = eye.clone().requires_grad_(True)
    look_at(eye, torch.zeros(3)).sum().backward()
    assert torch.isfinite(eye.grad).all()


# ----------------------------------------------------------------------------- orbit
@pytest.mark.parametrize("yaw", [0.0, 0.3, -0.7, 1.2, math.pi / 2, -2.5])
def test_orbit_matches_eg3d_lookat_sampler(yaw):
    pivot = (0.0, 0.0, 0.2)
    cam2world, K = orbit_camera(yaw, 0.0, 2.7, pivot, dtype=D)
    expected = eg3d_lookat_pose(math.pi / 2 + yaw, math.pi / 2, pivot, 2.7)
    assert torch.allclose(cam2world, expected, atol=1e-9)


def test_orbit_directions():
    frontal, _ = orbit_camera(0.0, 0.0, 2.7, (0.0, 0.0, 0.0), dtype=D)
    assert torch.allclose(frontal[:3, 3], torch.tensor([0.0, 0.0, 2.7], dtype=D))
    right, _ = orbit_camera(0.4, 0.0, dtype=D)
    assert right[0, 3] > 0  # positive yaw moves toward +x
    up, _ = orbit_camera(0.0, 0.3, 2.7, (0.0, 0.0, 0.2), dtype=D)
    assert up[1, 3] > 0.0  # above the pivot
    assert camera_forward(up)[1] < 0  # looking down
    down, _ = orbit_camera(0.0, -0.3, dtype=D)
    assert down[1, 3] < 0.0
    top, _ = orbit_camera(0.0, math.pi / 2, 2.7, (0.0, 0.0, 0.0))
    assert torch.isfinite(top).all()


def test_orbit_broadcasts():
    yaw = torch.linspace(-1, 1, 5)
    cam2world, K = orbit_camera(yaw, torch.tensor([[0.0], [0.2]]), 2.7, (0.0, 0.0, 0.2), 18.0)
    assert cam2world.shape == (2, 5, 4, 4) and K.shape == (2, 5, 3, 3)
    assert torch.allclose(cam2world[..., :3, 3].norm(dim=-1), torch.full((2, 5), 2.7))
    assert cam2world.dtype == torch.float32
    with pytest.raises(CameraError):
        orbit_camera(0.0, 0.0, -1.0)


# ----------------------------------------------------------------------------- intrinsics
def test_fov_intrinsics_round_trip():
    fov = torch.tensor([10.0, 13.37, 45.0, 90.0, 150.0], dtype=D)
    K = intrinsics_from_fov(fov)
    assert K.shape == (5, 3, 3)
    assert torch.allclose(fov_from_intrinsics(K), fov)
    assert torch.allclose(K[:, 0, 0], 1 / (2 * torch.tan(torch.deg2rad(fov) / 2)))
    assert torch.equal(K[:, :2, 2], torch.full((5, 2), 0.5, dtype=D))
    assert intrinsics_from_fov(FFHQ_FOV_DEG)[0, 0].item() == pytest.approx(FFHQ_FOCAL, rel=1e-6)
    with pytest.raises(CameraError):
        intrinsics_from_fov(0.0)
    with pytest.raises(CameraError):
        intrinsics_from_fov(180.0)


# ----------------------------------------------------------------------------- rasterizer
def test_to_rasterizer_inverse_and_pixels():
    cam2world, K_norm = sample_uniform(8, generator=torch.Generator().manual_seed(1), dtype=D)
    viewmats, Ks = to_rasterizer(cam2world, K_norm, 128, 96)
    assert torch.allclose(viewmats @ cam2world, torch.eye(4, dtype=D).expand(8, 4, 4), atol=1e-12)
    assert torch.allclose(viewmats, torch.linalg.inv(cam2world), atol=1e-12)
    assert torch.allclose(Ks[:, 0], K_norm[:, 0] * 128)
    assert torch.allclose(Ks[:, 1], K_norm[:, 1] * 96)
    assert torch.equal(Ks[:, 2], K_norm[:, 2])
    with pytest.raises(CameraError):
        to_rasterizer(cam2world, K_norm, 0, 96)


def test_camera_forward_is_unit_and_points_at_pivot():
    cam2world, _ = sample_ffhq_like(6, generator=torch.Generator().manual_seed(2), dtype=D)
    forward = camera_forward(cam2world)
    assert torch.allclose(forward.norm(dim=-1), torch.ones(6, dtype=D))
    to_pivot = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 0.2], dtype=D) - cam2world[:, :3, 3], dim=-1)
    assert torch.allclose(forward, to_pivot)


# ----------------------------------------------------------------------------- samplers
def test_samplers_are_deterministic():
    for sampler in (sample_ffhq_like, sample_uniform):
        a = sampler(32, generator=torch.Generator().manual_seed(7))
        b = sampler(32, generator=torch.Generator().manual_seed(7))
        c = sampler(32, generator=torch.Generator().manual_seed(8))
        assert a[0].shape == (32, 4, 4) and a[1].shape == (32, 3, 3)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])


def _yaw_pitch(cam2world, pivot=(0.0, 0.0, 0.2)):  # recovers the orbit angles from the eye
    eye = cam2world[..., :3, 3]
    radius = eye.norm(dim=-1)
    return torch.atan2(eye[..., 0], eye[..., 2]), torch.asin(eye[..., 1] / radius)


def test_ffhq_like_spread():
    cam2world, K = sample_ffhq_like(20000, generator=torch.Generator().manual_seed(0), dtype=D)
    yaw, pitch = _yaw_pitch(cam2world)
    assert abs(yaw.mean().item()) < 0.01 and abs(pitch.mean().item()) < 0.01
    assert yaw.std().item() == pytest.approx(0.3, rel=0.03)
    assert pitch.std().item() == pytest.approx(0.155, rel=0.03)
    assert torch.allclose(cam2world[:, :3, 3].norm(dim=-1), torch.full((20000,), 2.7, dtype=D))
    assert torch.allclose(K, intrinsics_from_fov(FFHQ_FOV_DEG, dtype=D).expand(20000, 3, 3))


def test_uniform_spread():
    cam2world, _ = sample_uniform(20000, (-1.0, 0.5), (-0.2, 0.3), generator=torch.Generator().manual_seed(0), dtype=D)
    yaw, pitch = _yaw_pitch(cam2world)
    assert yaw.min().item() >= -1.0 - 1e-9 and yaw.max().item() <= 0.5 + 1e-9
    assert pitch.min().item() >= -0.2 - 1e-9 and pitch.max().item() <= 0.3 + 1e-9
    assert yaw.mean().item() == pytest.approx(-0.25, abs=0.02)
    assert yaw.std().item() == pytest.approx(1.5 / math.sqrt(12), rel=0.03)
    assert pitch.mean().item() == pytest.approx(0.05, abs=0.01)


# ----------------------------------------------------------------------------- OrbitPose
def test_orbit_pose_dict_round_trip():
    pose = OrbitPose(yaw=0.25, pitch=-0.1, radius=3, pivot=(0, 0.1, 0.2), fov_deg=20)
    data = pose.to_dict()
    assert all(type(v) is float for k, v in data.items() if k != "pivot")
    assert type(data["pivot"]) is list and all(type(v) is float for v in data["pivot"])
    assert OrbitPose.from_dict(data) == pose
    import json

    assert OrbitPose.from_dict(json.loads(json.dumps(data))) == pose
    cam2world, K = pose.cameras()
    expected = orbit_camera(0.25, -0.1, 3.0, (0.0, 0.1, 0.2), 20.0)
    assert torch.equal(cam2world, expected[0]) and torch.equal(K, expected[1])
    assert OrbitPose().fov_deg == pytest.approx(math.degrees(2 * math.atan(1 / (2 * 4.2647))))


@pytest.mark.parametrize(
    "change",
    [
        {"yaw": None},
        {"yaw": "0.1"},
        {"pitch": float("nan")},
        {"radius": 0.0},
        {"radius": True},
        {"fov_deg": 190.0},
        {"pivot": [0.0, 0.0]},
        {"pivot": "abc"},
        {"pivot": [0.0, "x", 0.0]},
        {"extra": 1.0},
    ],
)
def test_orbit_pose_bad_dict(change):
    data = OrbitPose().to_dict()
    data.update(change)
    with pytest.raises(CameraError):
        OrbitPose.from_dict(data)


def test_orbit_pose_missing_key_and_not_a_dict():
    data = OrbitPose().to_dict()
    del data["radius"]
    with pytest.raises(CameraError, match="radius"):
        OrbitPose.from_dict(data)
    with pytest.raises(CameraError):
        OrbitPose.from_dict([1, 2, 3])


# ----------------------------------------------------------------------------- mirror
def test_mirrored_camera_projects_mirrored_point_to_mirrored_pixel():
    width, height = 64, 48
    cam2world, K = sample_uniform(10, generator=torch.Generator().manual_seed(3), dtype=D)
    mirrored = mirror_cameras(cam2world)
    R = mirrored[:, :3, :3]
    assert torch.allclose(torch.linalg.det(R), torch.ones(10, dtype=D))
    points = torch.randn(10, 3, dtype=D) * 0.3
    pix = project(cam2world, K, points, width, height)
    pix_mirror = project(mirrored, K, points * torch.tensor([-1.0, 1.0, 1.0], dtype=D), width, height)
    assert torch.allclose(pix_mirror[:, 0], width - pix[:, 0], atol=1e-9)
    assert torch.allclose(pix_mirror[:, 1], pix[:, 1], atol=1e-9)
    assert torch.allclose(mirror_cameras(mirrored), cam2world)


def test_mirror_matches_eg3d_label_flip_and_orbit_yaw():
    cam2world, K = orbit_camera(0.4, 0.1, dtype=D)
    label = cameras_to_labels(cam2world, K)
    flipped = label.clone()
    flipped[[1, 2, 3, 4, 8]] *= -1  # EG3D's flip_yaw on the flattened label
    assert torch.allclose(cameras_to_labels(mirror_cameras(cam2world), K), flipped)
    # and mirroring the orbit at yaw is the orbit at -yaw when the pivot lies on x = 0
    assert torch.allclose(mirror_cameras(cam2world), orbit_camera(-0.4, 0.1, dtype=D)[0], atol=1e-12)


def test_orbit_pose_from_labels_finds_the_pivot_the_cameras_look_at():
    from gsgan_core.cameras import OrbitPose, cameras_to_labels, orbit_camera

    yaws = torch.tensor([-0.4, -0.1, 0.0, 0.3, 2.5])
    pitches = torch.tensor([0.1, -0.2, 0.0, 0.15, 0.05])
    cam2world, K = orbit_camera(yaws, pitches, 2.7, (0.0, 0.05, 0.2), 18.0, dtype=torch.float64)
    pose = OrbitPose.from_labels(cameras_to_labels(cam2world, K.expand(5, 3, 3)))
    assert pose.pivot == pytest.approx((0.0, 0.05, 0.2), abs=1e-6)
    assert pose.radius == pytest.approx(2.7) and pose.fov_deg == pytest.approx(18.0)
    assert (pose.yaw, pose.pitch) == (0.0, 0.0)
