import math

import numpy as np
import pytest
import torch
from scipy.linalg import logm
from scipy.spatial.transform import Rotation

from ntdmbench.benchmark import metrics as M
from ntdmbench.models.reference import uniform_angles


def Rz(p):
    c, s = math.cos(p), math.sin(p)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def Rx(p):
    c, s = math.cos(p), math.sin(p)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def test_rotation_matrix_is_the_pascal3d_convention():
    a, e, t = 1.1, 0.4, -0.3
    expected = Rz(t) @ Rx(-(math.pi / 2 - e)) @ Rz(-a)
    np.testing.assert_allclose(M.rotation_matrix(a, e, t), expected, atol=1e-15)


def test_rotation_matrix_camera_axis_points_at_the_camera_centre():
    # The third row (camera z axis in world coordinates) is C/|C| with C = d(cos e sin a, -cos e cos a, sin e).
    a, e = 0.7, 0.3
    c = np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])
    np.testing.assert_allclose(M.rotation_matrix(a, e, 0.2)[2], c, atol=1e-15)


@pytest.mark.parametrize("shape", [(), (7,), (3, 5)])
def test_rotation_matrix_batch_shapes_numpy_and_torch(shape):
    rng = np.random.default_rng(0)
    a, e, t = (rng.uniform(-3, 3, shape) for _ in range(3))
    R = M.rotation_matrix(a, e, t)
    assert R.shape == shape + (3, 3)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    Rt = M.rotation_matrix(torch.tensor(a), torch.tensor(e), torch.tensor(t))
    assert isinstance(Rt, torch.Tensor) and Rt.shape == R.shape
    np.testing.assert_allclose(Rt.numpy(), R, atol=1e-12)


def test_rotation_matrix_broadcasts_scalars_against_arrays():
    R = M.rotation_matrix(np.linspace(0, 1, 4), 0.2, 0.0)
    assert R.shape == (4, 3, 3)


def test_rotation_error_matches_logm_away_from_180_degrees():
    Rp = Rotation.random(200, random_state=2).as_matrix()
    Rg = Rotation.random(200, random_state=3).as_matrix()
    err = M.rotation_error(Rp, Rg)
    ref = np.array([np.linalg.norm(logm(p.T @ g)) / math.sqrt(2) for p, g in zip(Rp, Rg)]).real
    keep = ref < math.pi - 1e-3
    assert keep.sum() > 190
    np.testing.assert_allclose(err[keep], ref[keep], atol=1e-9, rtol=0)


def test_rotation_error_small_angles_are_accurate():
    for angle in (1e-8, 1e-5, 1e-3):
        assert M.rotation_error(np.eye(3), Rz(angle)) == pytest.approx(angle, rel=1e-9)


def test_rotation_error_is_finite_and_pi_at_exactly_180_degrees():
    for axis in (np.eye(3), Rotation.random(5, random_state=4).as_rotvec()):
        for v in np.atleast_2d(axis):
            R180 = Rotation.from_rotvec(math.pi * v / np.linalg.norm(v)).as_matrix()
            assert M.rotation_error(np.eye(3), R180) == pytest.approx(math.pi, abs=1e-7)
    # the azimuth flip at zero elevation is an exact half turn
    assert M.pose_error([0.0, 0.0, 0.0], [math.pi, 0.0, 0.0]) == pytest.approx(math.pi, abs=1e-12)


def test_rotation_error_torch_is_differentiable():
    a = torch.tensor(0.5, requires_grad=True)
    err = M.rotation_error(M.rotation_matrix(a, torch.tensor(0.1), torch.tensor(0.0)),
                           M.rotation_matrix(torch.tensor(0.2), torch.tensor(0.1), torch.tensor(0.0)))
    err.backward()
    assert torch.isfinite(a.grad) and a.grad > 0


@pytest.mark.parametrize("threshold", [M.PI_6, M.PI_18])
def test_pose_accuracy_threshold_is_strict(threshold):
    below, above = np.nextafter(threshold, 0), np.nextafter(threshold, 4)
    assert M.pose_accuracy([below], threshold) == 100.0
    assert M.pose_accuracy([threshold], threshold) == 0.0
    assert M.pose_accuracy([above], threshold) == 0.0
    assert M.pose_accuracy([below, threshold, above, 0.0], threshold) == 50.0


def test_boundary_through_the_angle_pipeline():
    # an azimuth offset of exactly pi/6 at zero elevation and theta is a rotation of exactly pi/6 about z
    gt = np.zeros(3)
    for eps, hit in ((-1e-9, True), (0.0, None), (1e-9, False)):
        err = M.pose_error([M.PI_6 + eps, 0, 0], gt)
        if hit is not None:
            assert (M.pose_accuracy([err], M.PI_6) == 100.0) is hit
        else:
            assert err == pytest.approx(M.PI_6, abs=1e-12)


def test_missing_and_nan_errors_count_as_pi():
    assert M.pose_accuracy([np.nan, 0.0], M.PI_6) == 50.0
    assert M.median_error_deg([np.nan, np.inf, 0.0]) == pytest.approx(180.0)
    assert M.pose_error([np.nan, 0.0, 0.0], [0.0, 0.0, 0.0]) == math.pi


def test_median_error_is_pooled_and_in_degrees():
    errs = np.radians([1.0, 2.0, 3.0, 40.0])
    assert M.median_error_deg(errs) == pytest.approx(2.5)


def test_amodal_iou_conventions():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert M.amodal_iou(a, b) == 1.0  # both empty
    a[:2] = True
    b[1:3] = True
    assert M.amodal_iou(a, b) == pytest.approx(4 / 12)
    assert M.amodal_iou(None, b) == 0.0
    assert M.amodal_iou(a.astype(float) * 0.6, b) == pytest.approx(4 / 12)  # binarised at 0.5
    assert M.amodal_iou(a.astype(float) * 0.4, b) == 0.0
    batch = M.amodal_iou(np.stack([a, b]), np.stack([b, b]))
    np.testing.assert_allclose(batch, [4 / 12, 1.0])
    with pytest.raises(ValueError, match="mask shapes differ"):
        M.amodal_iou(np.zeros((3, 3)), b)


def test_top1():
    assert M.top1(["car", None, "bus", "car"], ["car", "car", "bus", "bus"]) == 50.0


def test_wilson_interval_contains_estimate_and_is_in_percent():
    lo, hi = M.wilson_interval(30, 100)
    assert 0 < lo < 30 < hi < 100
    assert M.wilson_interval(100, 100)[1] == pytest.approx(100.0)


def test_median_bootstrap_is_seeded():
    errs = np.random.default_rng(0).uniform(0, 1, 300)
    assert M.median_error_interval(errs, seed=3) == M.median_error_interval(errs, seed=3)
    lo, hi = M.median_error_interval(errs, seed=3)
    assert lo < M.median_error_deg(errs) < hi


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    better = (base < 0.7).astype(float)
    worse = (base < 0.5).astype(float)
    res = M.paired_bootstrap(better, worse)
    assert res.difference == pytest.approx(np.mean(better) - np.mean(worse))
    assert res.ci_low > 0 and res.p_value < 0.01
    same = M.paired_bootstrap(better, better[rng.permutation(400)])
    assert same.ci_low < 0 < same.ci_high and same.p_value > 0.05


def test_uniform_angles_give_the_chance_accuracy_of_uniform_rotations():
    # P(angle < t) for a uniform rotation is (t - sin t) / pi
    angles = uniform_angles(np.random.default_rng(0), 200_000)
    err = M.pose_error(angles, np.zeros(3))
    for t in (M.PI_6, math.pi / 2):
        assert M.pose_accuracy(err, t) == pytest.approx(100 * (t - math.sin(t)) / math.pi, abs=0.15)
