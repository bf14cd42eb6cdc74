import math

import pytest
import torch

from ntdmbench.baselines.horn import horn_similarity, quaternion_to_matrix
from ntdmbench.models.camera import rotation_matrix


def known_transform(batch=6, points=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    angles = torch.rand(3, batch, generator=g, dtype=torch.float64) * torch.tensor([[2 * math.pi], [1.0], [1.0]])
    R = rotation_matrix(angles[0], angles[1] - 0.5, angles[2] - 0.5)
    s = 0.5 + 3 * torch.rand(batch, generator=g, dtype=torch.float64)
    t = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    source = torch.randn(batch, points, 3, generator=g, dtype=torch.float64)
    target = s[:, None, None] * source @ R.transpose(1, 2) + t[:, None]
    return source, target, R, t, s, g


def test_recovers_a_known_similarity_exactly():
    source, target, R, t, s, _ = known_transform()
    R_, t_, s_ = horn_similarity(source, target)
    assert torch.allclose(R_, R, atol=1e-10)
    assert torch.allclose(t_, t, atol=1e-10)
    assert torch.allclose(s_, s, atol=1e-10)


def test_positive_weights_do_not_change_an_exact_fit_and_zero_weights_drop_outliers():
    source, target, R, t, s, g = known_transform()
    weights = 0.1 + torch.rand(source.shape[:2], generator=g, dtype=torch.float64)
    R_, _, s_ = horn_similarity(source, target, weights)
    assert torch.allclose(R_, R, atol=1e-10) and torch.allclose(s_, s, atol=1e-10)
    corrupted = target.clone()
    corrupted[:, :3] += 5 * torch.randn(corrupted.shape[0], 3, 3, generator=g, dtype=torch.float64)
    weights[:, :3] = 0
    R_, t_, s_ = horn_similarity(source, corrupted, weights)
    assert torch.allclose(R_, R, atol=1e-10) and torch.allclose(t_, t, atol=1e-10)
    R_bad, _, _ = horn_similarity(source, corrupted)  # unweighted, the outliers pull the fit away
    assert (R_bad - R).abs().amax() > 1e-3


def test_integer_weights_equal_repeated_points():
    source, target, *_, g = known_transform(batch=1, points=7)
    noisy = target + 0.05 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    repeats = torch.tensor([1, 3, 1, 2, 1, 4, 1])
    weighted = horn_similarity(source, noisy, repeats[None].double())
    repeated = horn_similarity(source[0].repeat_interleave(repeats, 0)[None], noisy[0].repeat_interleave(repeats, 0)[None])
    for a, b in zip(weighted, repeated):
        assert torch.allclose(a, b, atol=1e-10)


def test_noisy_weighted_fit_stays_close_and_is_a_proper_rotation():
    source, target, R, _, s, g = known_transform(points=40)
    noise = 0.02 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    weights = torch.rand(source.shape[:2], generator=g, dtype=torch.float64)
    R_, _, s_ = horn_similarity(source, target + noise * s[:, None, None], weights)
    cos = ((R_.transpose(1, 2) @ R).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    assert torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).max() < 3.0
    assert torch.allclose(s_, s, rtol=0.05)
    assert torch.allclose(torch.linalg.det(R_), torch.ones(len(R_), dtype=R_.dtype))
    mirrored = target * torch.tensor([-1.0, 1.0, 1.0], dtype=target.dtype)  # best fit is a reflection
    assert torch.allclose(torch.linalg.det(horn_similarity(source, mirrored)[0]), torch.ones(len(R_), dtype=R_.dtype))


def test_all_zero_weights_give_nan_and_bad_shapes_are_refused():
    source, target, *_ = known_transform(batch=2)
    weights = torch.ones(source.shape[:2], dtype=torch.float64)
    weights[1] = 0
    R_, t_, s_ = horn_similarity(source, target, weights)
    assert torch.isfinite(R_[0]).all() and torch.isnan(R_[1]).all() and torch.isnan(s_[1]) and torch.isnan(t_[1]).all()
    with pytest.raises(ValueError, match="source and target"):
        horn_similarity(source, target[..., :2])
    with pytest.raises(ValueError, match="weights"):
        horn_similarity(source, target, weights[:, :3])


def test_quaternion_matrix_is_a_rotation_about_the_axis():
    half = math.pi / 6
    q = torch.tensor([math.cos(half), 0.0, 0.0, math.sin(half)], dtype=torch.float64)  # 60 deg about z
    expected = torch.tensor([[0.5, -math.sqrt(3) / 2, 0], [math.sqrt(3) / 2, 0.5, 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(quaternion_to_matrix(q), expected, atol=1e-12)
