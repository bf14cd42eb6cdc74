"""Neural textures: polar UV, periodic sampling across the seam, viewing coefficients, rendering, M-step."""

from __future__ import annotations

import math

import pytest
import torch

from ntdmbench.models.camera import Camera
from ntdmbench.models.meshes import icosphere
from ntdmbench.ntdm.textures import (
    NeuralTexture,
    SurfaceFragments,
    bin_rotations,
    feature_table,
    polar_uv,
    render_features,
    surface_scores,
    sphere_uv,
    view_coefficients,
)


def test_polar_uv_unwraps_the_seam_and_the_poles():
    v, f = icosphere(3).torch()
    face_uvs, uvs = polar_uv(v, f)
    corners = uvs[face_uvs]  # (F, 3, 2)
    span = corners[..., 0].amax(1) - corners[..., 0].amin(1)
    assert not torch.isnan(uvs).any() and span.max() < 0.25  # no face runs the long way round
    assert (corners[..., 0] > 1).any()  # seam faces continue past u = 1 instead
    # away from the seam and the poles the corner UVs are the vertices' own polar coordinates
    torch.testing.assert_close(uvs[face_uvs[:, 0]][:, 1], sphere_uv(v[f[:, 0]])[:, 1], atol=1e-6, rtol=0)


def test_lookup_is_bilinear_and_periodic_in_u():
    texture = NeuralTexture(1, 1, 4)
    texture.maps.copy_(torch.arange(4.0).expand(1, 1, 4, 4))  # column c holds c
    uv = torch.tensor([[0.0, 0.5], [1.0, 0.5], [1.125, 0.5], [0.5, 0.5], [0.25, 0.5], [-0.125, 0.9]])
    values = texture.lookup(uv)[:, 0, 0]
    torch.testing.assert_close(values, torch.tensor([1.5, 1.5, 0.0, 1.5, 0.5, 3.0]))  # the seam blends 3 and 0
    uv.requires_grad_(True)
    texture.lookup(uv).sum().backward()
    assert uv.grad[3, 0] == pytest.approx(4.0)  # d value / du = q between texel centres


def test_view_coefficients():
    rotations = bin_rotations(7, 60.0)
    assert rotations.shape == (7, 3, 3)
    angles = torch.einsum("bij,cij->bc", rotations, rotations).sub(1).div(2).clamp(-1, 1).acos()
    assert torch.allclose(angles[0, 1:], torch.full((6,), math.radians(60)), atol=1e-5)
    n = torch.nn.functional.normalize(torch.randn(50, 3), dim=1)
    alpha = view_coefficients(n, n, rotations, 5.0)
    torch.testing.assert_close(alpha.sum(1), torch.ones(50))
    assert (alpha.argmax(1) == 0).all()  # seen along the normal: the identity bin wins
    assert torch.equal(view_coefficients(n, -n, bin_rotations(1), 5.0), torch.ones(50, 1))
    with pytest.raises(ValueError, match="n_bins"):
        bin_rotations(8)


def test_rendered_features_are_unit_on_the_object_and_zero_off_it():
    v, f = icosphere(2).torch()
    face_uvs, uvs = polar_uv(v, f)
    texture = NeuralTexture(7, 8, 16, torch.Generator().manual_seed(0))
    camera = Camera.create(0.5, 0.3, 0.1, 5.0, (12.0, 8.0), 1.0, 100.0).to(torch.float32)
    surface = SurfaceFragments(v * 0.4, f, face_uvs, uvs, v, camera, (16, 24))
    out = render_features(texture, surface, bin_rotations(7), 5.0)
    assert out.shape == (1, 8, 16, 24) and 20 < surface.mask.sum() < 16 * 24
    norms = out.norm(dim=1)[0]
    torch.testing.assert_close(norms[surface.mask[0]], torch.ones(int(surface.mask.sum())))
    assert norms[~surface.mask[0]].abs().max() == 0
    # the surface faces the camera wherever it is seen
    assert ((surface.normals * surface.to_camera).sum(-1)[surface.mask] > 0).all()


def test_momentum_update_moves_touched_texels_only():
    texture = NeuralTexture(2, 4, 8, torch.Generator().manual_seed(0))
    before = texture.maps.clone()
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    uv = torch.tensor([[0.3, 0.6]])
    alpha = torch.tensor([[1.0, 0.0]])
    assert texture.momentum_update(uv, alpha, target, momentum=0.9) == 4  # 4 neighbours in bin 0, none in bin 1
    assert torch.equal(texture.maps[1], before[1])
    assert (texture.maps[0] != before[0]).any(0).sum() == 4
    cosine = float(texture.lookup(uv)[0, 0] @ target[0])
    texture.maps.copy_(before)
    assert cosine > float(texture.lookup(uv)[0, 0] @ target[0])
    for _ in range(60):
        texture.momentum_update(uv, alpha, target, momentum=0.9)
    assert float(texture.lookup(uv)[0, 0] @ target[0]) > 0.99
    torch.testing.assert_close(texture.maps.norm(dim=1), torch.ones(2, 8, 8))


@pytest.mark.parametrize("fused", ["1", "0"])
def test_surface_scores_equal_the_rendered_features_dotted_with_the_image(fused, monkeypatch):
    monkeypatch.setenv("NTDMBENCH_FUSED", fused)
    v, f = icosphere(2).torch()
    face_uvs, uvs = polar_uv(v, f)
    gen = torch.Generator().manual_seed(1)
    texture = NeuralTexture(7, 8, 16, gen)
    camera = Camera.create(0.5, 0.3, 0.1, 5.0, (12.0, 8.0), 1.0, 100.0).to(torch.float32)
    surface = SurfaceFragments(v * 0.4, f, face_uvs, uvs, v, camera, (16, 24))
    features = torch.nn.functional.normalize(torch.randn(1, 8, 16, 24, generator=gen), dim=1)
    for bins in (None, 1):
        rendered = render_features(texture, surface, bin_rotations(7), 5.0, bins)
        scores = surface_scores(texture, surface, bin_rotations(7), 5.0, feature_table(features), bins)
        torch.testing.assert_close(scores, (rendered * features).sum(1), atol=1e-5, rtol=0)
