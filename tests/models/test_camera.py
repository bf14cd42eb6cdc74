"""The PASCAL3D+ camera against the conventions of datasets-and-conventions.md §4."""

import math

import numpy as np
import pytest
import torch

from ntdmbench.datasets.records import Pose
from ntdmbench.models import camera as C


def _rz(p):
    return np.array([[np.cos(p), -np.sin(p), 0], [np.sin(p), np.cos(p), 0], [0, 0, 1]])


def _rx(p):
    return np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])


@pytest.fixture
def poses():
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 2 * np.pi, 7), rng.uniform(-1.3, 1.3, 7), rng.uniform(-np.pi, np.pi, 7),
            rng.uniform(2, 10, 7))


def test_rotation_is_the_documented_formula(poses):
    a, e, t, _ = poses
    R = C.rotation_matrix(a, e, t).numpy()
    for i in range(len(a)):
        np.testing.assert_allclose(R[i], _rz(t[i]) @ _rx(-(np.pi / 2 - e[i])) @ _rz(-a[i]), atol=1e-12)


def test_rotation_agrees_with_metrics(poses):
    metrics = pytest.importorskip("ntdmbench.benchmark.metrics")
    a, e, t, _ = poses
    np.testing.assert_allclose(C.rotation_matrix(a, e, t).numpy(), metrics.rotation_matrix(a, e, t), atol=1e-12)


def test_angles_round_trip(poses):
    a, e, t, d = poses
    a2, e2, t2 = C.angles_from_rotation(C.rotation_matrix(a, e, t))
    np.testing.assert_allclose(a2.numpy(), a, atol=1e-9)
    np.testing.assert_allclose(e2.numpy(), e, atol=1e-9)
    np.testing.assert_allclose(t2.numpy(), t, atol=1e-9)
    a3, e3, d3 = C.position_to_angles(C.camera_position(a, e, d))
    np.testing.assert_allclose(np.stack([a3, e3, d3]), np.stack([a, e, d]), atol=1e-9)


def test_extrinsics_put_camera_centre_at_origin_looking_at_object(poses):
    a, e, t, d = poses
    R, tr = C.extrinsics(a, e, t, d)
    centre = C.camera_position(a, e, d)
    np.testing.assert_allclose((R @ centre[..., None])[..., 0] + tr, 0, atol=1e-12)
    np.testing.assert_allclose(tr.numpy(), np.stack([0 * d, 0 * d, -d], -1))


def test_project_is_the_documented_recipe(poses):
    """P = diag(Mf, Mf, -1) [R_rot | -R_rot C], divide by the third coordinate, rotate by theta,
    flip y, add the principal point (§4.1)."""
    a, e, t, d = poses
    X = np.random.default_rng(1).normal(scale=0.5, size=(9, 3))
    principal = np.array([321.0, 187.5])
    for i in range(len(a)):
        R_rot = _rx(-(np.pi / 2 - e[i])) @ _rz(-a[i])
        C_i = d[i] * np.array([np.cos(e[i]) * np.sin(a[i]), -np.cos(e[i]) * np.cos(a[i]), np.sin(e[i])])
        P = np.diag([3000.0, 3000.0, -1.0]) @ np.hstack([R_rot, -(R_rot @ C_i)[:, None]])
        h = P @ np.hstack([X, np.ones((9, 1))]).T
        xy = np.array([[np.cos(t[i]), -np.sin(t[i])], [np.sin(t[i]), np.cos(t[i])]]) @ (h[:2] / h[2])
        expected = np.stack([xy[0], -xy[1]], 1) + principal
        got = C.project(X, a[i], e[i], t[i], d[i], principal).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-7)


def test_project_batches_and_downsamples(poses):
    a, e, t, d = poses
    X = torch.randn(11, 3, dtype=torch.float64) * 0.3
    principal = torch.tensor([[100.0, 80.0]] * len(a), dtype=torch.float64)
    batched = C.project(X, a, e, t, d, principal, focal=1.0, viewport=3000.0)
    assert batched.shape == (len(a), 11, 2)
    for i in range(len(a)):
        torch.testing.assert_close(batched[i], C.project(X, a[i], e[i], t[i], d[i], principal[i]))
    cam = C.Camera.create(a, e, t, d, principal[0])
    torch.testing.assert_close(cam.project(X), batched)
    torch.testing.assert_close(cam.downsample(8).project(X), batched / 8)
    depth = cam.transform(torch.zeros(1, 3, dtype=torch.float64))[:, 0, 2]
    torch.testing.assert_close(depth, torch.as_tensor(d))


def test_project_gradcheck():
    X = torch.randn(5, 3, dtype=torch.float64) * 0.4
    args = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.7, 0.3, -0.2, 5.0)]
    assert torch.autograd.gradcheck(lambda a, e, t, d, x: C.project(x, a, e, t, d, (50.0, 40.0)),
                                    (*args, X.requires_grad_()))


def test_from_poses():
    cam = C.Camera.from_poses([Pose(0.1, 0.2, 0.3, 5.0, (10.0, 20.0)), Pose(1.0, -0.2, 0.0, 4.0, (5.0, 6.0), 1.0, 1500.0)])
    torch.testing.assert_close(cam.focal_px, torch.tensor([3000.0, 1500.0], dtype=torch.float64))
    torch.testing.assert_close(cam.principal[1], torch.tensor([5.0, 6.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="pose 0 .* no principal point"):
        C.Camera.from_poses([Pose(0.1, 0.2, 0.3)])


def test_pytorch3d_relation_and_round_trip(poses):
    a, e, t, d = poses
    R_p3d, T = C.to_pytorch3d(a, e, t, d)
    flip = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(R_p3d.transpose(-1, -2) @ C.AXIS_MAP, flip @ C.rotation_matrix(a, e, t))
    torch.testing.assert_close(T, torch.stack([0 * torch.as_tensor(d)] * 2 + [torch.as_tensor(d)], -1))
    back = C.from_pytorch3d(R_p3d, T)
    np.testing.assert_allclose(np.stack(back), np.stack([a, e, t, d]), atol=1e-9)
    X = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(C.pytorch3d_to_pascal(C.pascal_to_pytorch3d(X)), X)
    torch.testing.assert_close(C.pascal_to_pytorch3d(X)[:, 1], X[:, 2])


def test_pytorch3d_matches_nemo_look_at_and_screen_projection(poses):
    pytest.importorskip("pytorch3d")
    from pytorch3d.renderer import look_at_rotation

    a, e, t, d = poses
    R_p3d, _ = C.to_pytorch3d(a, e, t, d)
    # NeMo's campos_to_R_T: look_at_rotation(C in the PyTorch3D frame) @ Rz(theta)
    look = look_at_rotation(C.pascal_to_pytorch3d(C.camera_position(a, e, d)).float()).double()
    rz_theta = C.rotation_matrix(0.0, math.pi / 2, t)  # elevation 90 degrees leaves Rz(theta) alone
    torch.testing.assert_close(look @ rz_theta, R_p3d, atol=1e-6, rtol=0)
    cam = C.Camera.create(a, e, t, d, (40.0, 28.0)).downsample(8)
    X = torch.randn(len(a), 6, 3, dtype=torch.float64) * 0.3
    screen = C.pytorch3d_cameras(cam, (56, 80)).transform_points_screen(C.pascal_to_pytorch3d(X).float())
    torch.testing.assert_close(screen[..., :2].double(), cam.project(X), atol=1e-3, rtol=1e-5)
