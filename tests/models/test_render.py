"""The rasteriser: backend agreement, gradients against finite differences, alignment with ``project``.

Tolerances: backends agree on >= 99% of covered pixels' faces, silhouette IoU >= 0.99, features
and depth within 1e-4 where the faces agree, gradients within 1e-4 relative (L2 over all entries;
PyTorch3D runs in float32). Finite differences run on the float64 torch backend (step 1e-6,
relative 1e-6); the PyTorch3D backend's gradients are covered by agreeing with it.
"""

import math

import pytest
import torch

from ntdmbench.models import meshes as M
from ntdmbench.models import render as R
from ntdmbench.models.camera import Camera

H, W = 48, 64
PRINCIPAL = (W * 4.0, H * 4.0)  # full-resolution crop centre; rendered at stride 8
needs_pytorch3d = pytest.mark.skipif(not R.pytorch3d_available(), reason="pytorch3d not importable")


def _random_mesh(seed: int, level: int = 2):
    gen = torch.Generator().manual_seed(seed)
    v, f = M.icosphere(level).torch(torch.float64)
    scale = 0.3 + 0.7 * torch.rand(3, generator=gen, dtype=torch.float64)
    return v * scale + 0.03 * torch.randn(v.shape, generator=gen, dtype=torch.float64), f


def _random_pose_params(seed: int, B: int):
    gen = torch.Generator().manual_seed(seed)

    def rand(lo, hi):
        return lo + (hi - lo) * torch.rand(B, generator=gen, dtype=torch.float64)

    return [rand(0, 2 * math.pi), rand(-1.0, 1.2), rand(-0.6, 0.6), rand(3.5, 6.0)]


def _camera(params, stride=8):
    return Camera.create(*params, PRINCIPAL).downsample(stride)


def test_backend_selection(monkeypatch):
    monkeypatch.delenv(R.BACKEND_ENV, raising=False)
    assert R.resolve_backend() == "torch"  # on CPU the pure-torch rasteriser is the fast one
    assert R.resolve_backend(device="cuda") == ("pytorch3d" if R.pytorch3d_available() else "torch")
    monkeypatch.setenv(R.BACKEND_ENV, "torch")
    assert R.resolve_backend() == "torch"
    monkeypatch.setenv(R.BACKEND_ENV, "opengl")
    with pytest.raises(ValueError, match="'opengl' from NTDMBENCH_RENDER_BACKEND"):
        R.resolve_backend()
    with pytest.raises(ValueError, match="'cuda' from backend argument"):
        R.resolve_backend("cuda")


@needs_pytorch3d
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backends_agree_on_random_meshes_and_poses(seed):
    v, f = _random_mesh(seed)
    cam = _camera(_random_pose_params(seed, 6))
    a = R.rasterize(v, f, cam, (H, W), backend="pytorch3d")
    b = R.rasterize(v, f, cam, (H, W), backend="torch")
    covered = a.silhouette | b.silhouette
    assert covered.sum() > 0.05 * covered.numel()
    same = a.pix_to_face == b.pix_to_face
    assert same[covered].float().mean() >= 0.99
    assert (a.silhouette & b.silhouette).sum() / covered.sum() >= 0.99
    agree = same & a.silhouette
    feats = torch.randn(len(v), 5, dtype=torch.float64)
    fa, fb = R.interpolate(a, f, feats), R.interpolate(b, f, feats)
    torch.testing.assert_close(fa.permute(0, 2, 3, 1)[agree], fb.permute(0, 2, 3, 1)[agree], atol=1e-4, rtol=0)
    torch.testing.assert_close(a.depth[agree], b.depth[agree], atol=1e-4, rtol=1e-5)
    assert (a.depth[~a.silhouette] == 0).all() and (b.bary[~b.silhouette] == 0).all()


def _loss(v, f, params, weights, feats, backend):
    fragments = R.rasterize(v, f, _camera(params), (H, W), backend=backend)
    rendered = R.interpolate(fragments, f, feats)
    return (rendered * weights).sum() + (fragments.depth * weights[:, 0]).sum()


def _grads(v, f, params, weights, feats, backend):
    inputs = [v.clone().requires_grad_(), *(p.clone().requires_grad_() for p in params)]
    loss = _loss(inputs[0], f, inputs[1:], weights, feats, backend)
    return loss, torch.autograd.grad(loss, inputs)


@pytest.fixture
def grad_problem():
    v, f = _random_mesh(3)
    params = _random_pose_params(3, 4)
    gen = torch.Generator().manual_seed(3)
    weights = torch.randn(4, 3, H, W, generator=gen, dtype=torch.float64)
    feats = torch.randn(len(v), 3, generator=gen, dtype=torch.float64)
    return v, f, params, weights, feats


@needs_pytorch3d
def test_backend_gradients_agree(grad_problem):
    loss_a, grads_a = _grads(*grad_problem, "pytorch3d")
    loss_b, grads_b = _grads(*grad_problem, "torch")
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=0)
    for name, ga, gb in zip(("vertices", "azimuth", "elevation", "theta", "distance"), grads_a, grads_b):
        assert ((ga - gb).norm() / gb.norm()).item() < 1e-4, name


def test_gradients_match_finite_differences(grad_problem):
    v, f, params, weights, feats = grad_problem
    _, grads = _grads(v, f, params, weights, feats, "torch")
    eps = 1e-6
    checked = 0
    for i, p in enumerate(params):  # azimuth, elevation, theta, distance of each pose
        for b in range(len(p)):
            shifted = [[q.clone() for q in params] for _ in range(2)]
            shifted[0][i][b] += eps
            shifted[1][i][b] -= eps
            fd = (_loss(v, f, shifted[0], weights, feats, "torch") - _loss(v, f, shifted[1], weights, feats, "torch")) / (2 * eps)
            torch.testing.assert_close(grads[i + 1][b], fd, rtol=1e-6, atol=1e-6)
            checked += 1
    gen = torch.Generator().manual_seed(4)
    for j, c in zip(torch.randint(0, len(v), (8,), generator=gen).tolist(), [0, 1, 2] * 3):
        plus, minus = v.clone(), v.clone()
        plus[j, c] += eps
        minus[j, c] -= eps
        fd = (_loss(plus, f, params, weights, feats, "torch") - _loss(minus, f, params, weights, feats, "torch")) / (2 * eps)
        torch.testing.assert_close(grads[0][j, c], fd, rtol=1e-6, atol=1e-6)
        checked += 1
    assert checked == 24


@pytest.mark.parametrize("backend", [pytest.param("pytorch3d", marks=needs_pytorch3d), "torch"])
def test_silhouette_alone_equals_the_rasterised_one(backend):
    """``silhouette`` (the fused winner search alone on CPU) is ``rasterize(...).silhouette``."""
    v, f = _random_mesh(5, level=3)
    cam = _camera(_random_pose_params(5, 3), 1)
    want = R.rasterize(0.4 * v, f, cam, (H * 8, W * 8), backend=backend).silhouette
    assert want.any() and not want.all()
    assert torch.equal(R.silhouette(0.4 * v, f, cam, (H * 8, W * 8), backend=backend), want)


@pytest.mark.parametrize("backend", [pytest.param("pytorch3d", marks=needs_pytorch3d), "torch"])
@pytest.mark.parametrize("stride", [1, 8])
def test_projected_vertices_fall_inside_the_silhouette(backend, stride):
    v, f = _random_mesh(5, level=3)
    v = 0.4 * v  # keep the whole mesh in the image
    params = _random_pose_params(5, 3)
    params[3] = params[3] + 6.0
    size = (H * 8 // stride, W * 8 // stride)
    cam = _camera(params, stride)
    sil = R.rasterize(v, f, cam, size, backend=backend).silhouette
    xy = cam.project(v)
    assert ((xy >= 0) & (xy < torch.tensor(size[::-1], dtype=xy.dtype))).all()
    col, row = xy[..., 0].floor().long(), xy[..., 1].floor().long()
    # a vertex on the outline may sit just outside its pixel's centre sample: allow one pixel
    grown = torch.nn.functional.max_pool2d(sil[:, None].double(), 3, stride=1, padding=1)[:, 0] > 0
    batch = torch.arange(len(cam))[:, None].expand_as(col)
    assert grown[batch, row, col].all()
    assert sil[batch, row, col].float().mean() > 0.9
    for b in range(len(cam)):  # and the silhouette spans the projected vertices, to a pixel
        rows, cols = sil[b].nonzero(as_tuple=True)
        assert abs(cols.min() - xy[b, :, 0].min()) <= 1 and abs(cols.max() + 1 - xy[b, :, 0].max()) <= 1
        assert abs(rows.min() - xy[b, :, 1].min()) <= 1 and abs(rows.max() + 1 - xy[b, :, 1].max()) <= 1


def test_interpolated_surface_point_projects_to_the_pixel_centre_at_its_depth():
    """Perspective-correct barycentrics: interpolating the CAD positions gives the surface point
    seen at each pixel centre, at the rasterised depth."""
    v, f = _random_mesh(6)
    cam = _camera(_random_pose_params(6, 2))
    fragments = R.rasterize(v, f, cam, (H, W), backend="torch")
    points = R.interpolate(fragments, f, v).permute(0, 2, 3, 1)  # (B, H, W, 3)
    mask = fragments.silhouette
    screen = cam.transform(points[0][mask[0]])[0]  # first camera
    rows, cols = mask[0].nonzero(as_tuple=True)
    torch.testing.assert_close(screen[:, 0], cols.double() + 0.5)
    torch.testing.assert_close(screen[:, 1], rows.double() + 0.5)
    torch.testing.assert_close(screen[:, 2], fragments.depth[0][mask[0]])


def test_batches_of_meshes_equal_separate_calls():
    v, f = _random_mesh(7)
    params = _random_pose_params(7, 3)
    verts = torch.stack([v, 0.8 * v, 1.1 * v])
    together = R.rasterize(verts, f, _camera(params), (H, W), backend="torch")
    for b in range(3):
        alone = R.rasterize(verts[b], f, _camera([p[b:b + 1] for p in params]), (H, W), backend="torch")
        torch.testing.assert_close(together.pix_to_face[b], alone.pix_to_face[0])
        torch.testing.assert_close(together.bary[b], alone.bary[0])


def test_off_screen_and_bad_shapes():
    v, f = _random_mesh(8)
    cam = Camera.create(0.0, 0.0, 0.0, 5.0, (-5000.0, 0.0))
    fragments = R.rasterize(v, f, cam, (8, 8), backend="torch")
    assert (fragments.pix_to_face == -1).all() and not fragments.silhouette.any()
    with pytest.raises(ValueError, match="faces must be"):
        R.rasterize_screen(torch.zeros(1, 3, 3), torch.zeros(4, dtype=torch.int64), (8, 8))


def test_texture_sampling_matches_interpolated_uv():
    v, f = _random_mesh(9)
    cam = _camera(_random_pose_params(9, 2))
    fragments = R.rasterize(v, f, cam, (H, W), backend="torch")
    uvs = (v[:, :2] - v[:, :2].min(0).values) / (v[:, :2].max(0).values - v[:, :2].min(0).values)
    size = 32
    ramp = (torch.arange(size, dtype=torch.float64) + 0.5) / size  # texel centres, align_corners=False
    texture = torch.stack([ramp.expand(size, size), ramp.flip(0)[:, None].expand(size, size)])  # u right, v up
    sampled = R.sample_texture(fragments, f, uvs, texture)
    expected = R.interpolate(fragments, f, uvs)
    inner = fragments.silhouette[:, None] & (expected > 0.5 / size) & (expected < 1 - 0.5 / size)
    torch.testing.assert_close(sampled[inner], expected[inner])
    assert (sampled[~fragments.silhouette[:, None].expand_as(sampled)] == 0).all()
