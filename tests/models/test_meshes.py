"""Mesh I/O, the sphere template, NeMo cuboids and the NTDM geometric losses."""

import numpy as np
import pytest
import torch

from ntdmbench.datasets.records import DataError
from ntdmbench.models import meshes as M

CUBE_OFF = """OFF
8 12 0
0 0 0
1 0 0
1 1 0
0 1 0
0 0 1
1 0 1
1 1 1
0 1 1
3 0 2 1
3 0 3 2
3 4 5 6
3 4 6 7
3 0 1 5
3 0 5 4
3 1 2 6
3 1 6 5
3 2 3 7
3 2 7 6
3 3 0 4
3 3 4 7
"""


def test_off_round_trip_and_header_variants(tmp_path):
    cube = tmp_path / "cube.off"
    cube.write_text(CUBE_OFF)
    mesh = M.read_off(cube)
    assert mesh.vertices.shape == (8, 3) and mesh.faces.shape == (12, 3)
    for header in ("OFF 8 12 0", "OFF8 12 0"):  # counts on the header line, as some PASCAL3D+ files
        other = tmp_path / "same_line.off"
        other.write_text(CUBE_OFF.replace("OFF\n8 12 0", header))
        np.testing.assert_array_equal(M.read_off(other).faces, mesh.faces)
    out = tmp_path / "out.off"
    M.write_off(out, mesh)
    assert out.read_text().splitlines()[:2] == ["OFF", "8 12 0"]
    again = M.read_mesh(out)
    np.testing.assert_allclose(again.vertices, mesh.vertices)
    np.testing.assert_array_equal(again.faces, mesh.faces)


@pytest.mark.parametrize("text, message", [
    ("PLY\n", "not an OFF file"),
    ("OFF\n8 12\n0 0 0\n", "malformed OFF"),
    (CUBE_OFF.replace("3 0 2 1", "4 0 2 1 3"), "only triangles"),
    (CUBE_OFF.replace("3 0 2 1", "3 0 2 9"), "out of range"),
    (CUBE_OFF.replace("0 0 0\n", "0 x 0\n", 1), "malformed OFF"),
])
def test_off_errors_are_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.off"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        M.read_off(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_obj_round_trip_polygons_and_colours(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("# quad\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 3/1 4/1\nf -4 -2 -1\n")
    mesh = M.read_obj(path)
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
    out = tmp_path / "out.obj"
    M.write_obj(out, mesh, colors=np.full((4, 3), 0.5))
    assert out.read_text().splitlines()[0] == "v 0 0 0 0.5 0.5 0.5"
    again = M.read_mesh(out)
    np.testing.assert_allclose(again.vertices, mesh.vertices)
    np.testing.assert_array_equal(again.faces, mesh.faces)
    path.write_text("v 0 0\n")
    with pytest.raises(DataError, match="quad.obj: malformed OBJ line 1"):
        M.read_obj(path)
    with pytest.raises(DataError, match="unknown mesh format"):
        M.read_mesh(tmp_path / "x.ply")


def test_icosphere():
    mesh = M.icosphere(4)
    assert mesh.vertices.shape == (2562, 3) and mesh.faces.shape == (5120, 3)
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1), 1.0)
    edges = np.unique(np.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1), axis=0)
    assert len(mesh.vertices) - len(edges) + len(mesh.faces) == 2  # closed genus-0 surface
    v, f = mesh.torch(torch.float64)
    assert (M.vertex_normals(v, f) * v).sum(-1).min() > 0.999  # outward, and normals ~ positions


def test_coverage_box_drops_outliers_and_cuboid_matches_nemo_example():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-1, 1, (1000, 3)), [[50, 50, 50]] * 5])
    box = M.coverage_box(points, 0.99)
    assert (box[:, 0] >= -1).all() and (box[:, 1] <= 1).all() and (box[:, 1] - box[:, 0] > 1.9).all()
    # §5.2 worked example: a car box meshed into an 11 x 23 x 9 grid has 1118 vertices and 1904 faces
    car = M.cuboid(np.array([[0, 10.3], [0, 22.4], [0, 8.25]]) * 0.04, number_vertices=1000)
    assert car.vertices.shape == (1118, 3) and car.faces.shape == (1904, 3)
    v, f = car.torch(torch.float64)
    centre = v.mean(0)
    face_centres = v[f].mean(1)
    assert (M.face_normals(v, f) * (face_centres - centre)).sum(-1).min() > 0  # all faces point out
    np.testing.assert_allclose(car.vertices.min(0), [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(car.vertices.max(0), [0.412, 0.896, 0.33], atol=1e-12)


def test_nemo_cuboids_single_and_multi():
    rng = np.random.default_rng(1)
    cads = [M.Mesh(rng.normal(size=(300, 3)) * s, np.zeros((0, 3), np.int64)) for s in (0.5, 1.0, 1.5)]
    multi = M.nemo_cuboids(cads, "multi")
    single = M.nemo_cuboids(cads, "single")
    assert len(multi) == 3 and len(single) == 1
    for mesh in multi + single:
        assert 900 <= len(mesh.vertices) <= 1200
    np.testing.assert_allclose(np.stack([single[0].vertices.min(0), single[0].vertices.max(0)], 1),
                               M.coverage_box(np.concatenate([c.vertices for c in cads])))
    with pytest.raises(ValueError, match="'single' or 'multi'"):
        M.nemo_cuboids(cads, "both")


@pytest.fixture
def bumpy_sphere():
    torch.manual_seed(0)
    v, f = M.icosphere(2).torch(torch.float64)
    return v * torch.tensor([0.6, 1.0, 0.5], dtype=torch.float64) + 0.03 * torch.randn_like(v), f


@pytest.mark.parametrize("kind", ["uniform", "cot"])
def test_laplacian_matches_pytorch3d(bumpy_sphere, kind):
    pytest.importorskip("pytorch3d")
    from pytorch3d.loss import mesh_laplacian_smoothing
    from pytorch3d.structures import Meshes

    v, f = bumpy_sphere
    batch = torch.stack([v, 1.3 * v])
    expected = mesh_laplacian_smoothing(Meshes(list(batch.float()), [f, f]), kind).double()
    torch.testing.assert_close(M.laplacian_smoothing(batch, f, kind), expected, rtol=1e-5, atol=0)
    L = M.laplacian(v, f, kind)
    torch.testing.assert_close((L @ v).norm(dim=1).mean(), M.laplacian_smoothing(v, f, kind))
    torch.testing.assert_close(torch.sparse.sum(L, 1).to_dense(), torch.zeros(len(v), dtype=v.dtype))


def test_laplacian_of_flat_grid_interior_is_zero():
    v, f = M.cuboid(np.array([[0, 1], [0, 1], [0, 1]]), 600).torch(torch.float64)
    delta = M.laplacian(v, f, "uniform") @ v
    interior = ((v > 1e-9) & (v < 1 - 1e-9)).sum(1) == 2  # inside a side, off the cube's edges
    torch.testing.assert_close(delta[interior], torch.zeros_like(delta[interior]))


def test_normal_consistency_matches_pytorch3d(bumpy_sphere):
    pytest.importorskip("pytorch3d")
    from pytorch3d.loss import mesh_normal_consistency
    from pytorch3d.structures import Meshes

    v, f = bumpy_sphere
    expected = mesh_normal_consistency(Meshes([v.float()], [f])).double()
    torch.testing.assert_close(M.normal_consistency(v, f), expected, rtol=1e-5, atol=0)
    flipped = f.clone()
    flipped[::2] = flipped[::2].flip(1)  # inconsistent winding does not change the loss
    torch.testing.assert_close(M.normal_consistency(v, flipped), M.normal_consistency(v, f))
    torch.testing.assert_close(M.normal_consistency(torch.stack([v, v]), f), M.normal_consistency(v, f))


def test_point_face_distance_regions_and_brute_force(bumpy_sphere):
    tri = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    points = torch.tensor([[0.2, 0.2, 0.5], [0.5, -1, 0], [-1, -1, 1], [2, 2, 0], [0.5, 0.5, 0]], dtype=torch.float64)
    expected = torch.tensor([0.25, 1.0, 3.0, 4.5, 0.0], dtype=torch.float64)
    got = M.point_face_distance(points, tri, torch.tensor([[0, 1, 2]]))
    torch.testing.assert_close(got, expected)
    v, f = bumpy_sphere
    pts = torch.randn(200, 3, dtype=torch.float64)
    t = v[f]
    brute = M._closest_point_sq_distance(pts[:, None], t[None, :, 0], t[None, :, 1], t[None, :, 2]).min(1).values
    torch.testing.assert_close(M.point_face_distance(pts, v, f, chunk=4096), brute)


def test_point_face_distance_agrees_with_pytorch3d_on_well_shaped_meshes(bumpy_sphere):
    pytest.importorskip("pytorch3d")
    from pytorch3d.loss.point_mesh_distance import point_face_distance

    v, f = bumpy_sphere
    pts = torch.randn(300, 3, dtype=torch.float64) * 0.8
    start = torch.zeros(1, dtype=torch.int64)
    expected = point_face_distance(pts.float(), start, v[f].float(), start, 300, 1e-12).double()
    torch.testing.assert_close(M.point_face_distance(pts, v, f), expected, rtol=1e-4, atol=1e-6)


def test_mesh_distance_eq2_and_gradients(bumpy_sphere):
    v, f = bumpy_sphere
    assert M.mesh_distance(v, f, v, f).item() < 1e-6 * len(v)
    target_v, target_f = M.cuboid(np.array([[-0.4, 0.4], [-0.8, 0.8], [-0.3, 0.3]]), 300).torch(torch.float64)
    x = (v * 1.1).requires_grad_()
    d_sum = M.mesh_distance(x, f, target_v, target_f)
    d_sq = M.mesh_distance(x, f, target_v, target_f, squared=True, reduction="mean")
    one_way = M.point_face_distance(x, target_v, target_f).sqrt().sum()
    other_way = M.point_face_distance(target_v, x, f).sqrt().sum()
    torch.testing.assert_close(d_sum, one_way + other_way)
    assert 0 < d_sq < d_sum
    (grad,) = torch.autograd.grad(d_sq, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    small = x.detach()[:40].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: M.point_face_distance(p, target_v, target_f), (small,), fast_mode=True)
    sphere = v.clone().requires_grad_()  # the cuboid's repeated edge vertices make it non-smooth in its vertices
    points = torch.randn(30, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda q: M.point_face_distance(points, q, f), (sphere,), fast_mode=True)
    with pytest.raises(ValueError, match="reduction"):
        M.mesh_distance(x, f, target_v, target_f, reduction="max")
