"""NeMo's cuboids in the vertex order of the official ``tools/CreateCuboidMesh.py`` (Angtian/NeMo), so a
feature bank trained by the official code sits on the right vertices, and official mesh files used as is.

``official_cuboid`` is the official algorithm written out here: the 99 % coverage interval per axis
(``linear_coverage``), then ``meshelize``: edge ``sqrt(total_area / number_vertices)``, ``int(side / edge
+ 1)`` samples per axis, and six sides appended in order z = min, z = max (x inner loop, y outer), y = min,
y = max (x inner, z outer), x = min, x = max (y inner, z outer).
"""

import numpy as np
import pytest
import torch

from ntdmbench.baselines.nemo.category import category_cuboids
from ntdmbench.baselines.nemo.official import official_meshes
from ntdmbench.datasets.synthetic.cad import build_cad
from ntdmbench.models.meshes import Mesh, nemo_cuboids, write_off


def coverage(vertices, linear_coverage=0.99):
    n = int(len(vertices) * linear_coverage)
    out = []
    for axis in range(3):
        v = np.sort(vertices[:, axis])
        start = int(np.argmin(v[n:] - v[:-n]))
        out.append((v[start], v[start + n]))
    return out


def official_cuboid(x_range, y_range, z_range, number_vertices=1000):
    w, h, d = x_range[1] - x_range[0], y_range[1] - y_range[0], z_range[1] - z_range[0]
    edge = ((w * h + h * d + w * d) * 2 / number_vertices) ** 0.5
    xs = x_range[0] + np.linspace(0, w, int(w / edge + 1))
    ys = y_range[0] + np.linspace(0, h, int(h / edge + 1))
    zs = z_range[0] + np.linspace(0, d, int(d / edge + 1))
    rows = []
    for z in (zs[0], zs[-1]):
        rows += [(x, y, z) for y in ys for x in xs]
    for y in (ys[0], ys[-1]):
        rows += [(x, y, z) for z in zs for x in xs]
    for x in (xs[0], xs[-1]):
        rows += [(x, y, z) for z in zs for y in ys]
    return np.array(rows), (len(xs), len(ys), len(zs))


@pytest.mark.parametrize("category", ["car", "aeroplane", "chair"])
def test_rebuilt_cuboids_have_the_official_vertex_order_row_by_row(category):
    cads = [build_cad(category, k, seed=0).mesh for k in range(3)]
    single = nemo_cuboids(cads, "single")[0]
    expected, _ = official_cuboid(*coverage(np.concatenate([c.vertices for c in cads])))
    assert single.vertices.shape == expected.shape
    np.testing.assert_array_equal(single.vertices, expected)  # same arithmetic: bit for bit
    for cad, mesh in zip(cads, nemo_cuboids(cads, "multi")):
        np.testing.assert_array_equal(mesh.vertices, official_cuboid(*coverage(cad.vertices))[0])


def test_triangles_tile_every_side_once_and_face_outwards():
    box = np.array([[0, 10.3], [0, 22.4], [0, 8.25]]) * 0.04
    mesh = nemo_cuboids([Mesh(np.array(np.meshgrid(*box, indexing="ij")).reshape(3, -1).T, np.zeros((0, 3), int))],
                        "single", 1000, coverage=1.0 - 1e-9)[0]
    rows, (xn, yn, zn) = official_cuboid(*box)
    assert (xn, yn, zn) == (11, 23, 9) and len(mesh.vertices) == 1118 and len(mesh.faces) == 1904
    np.testing.assert_array_equal(mesh.vertices, rows)
    v, f = torch.as_tensor(mesh.vertices), torch.as_tensor(mesh.faces)
    normals = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert ((normals * (v[f].mean(1) - v.mean(0))).sum(1) > 0).all()
    w, h, d = box[:, 1] - box[:, 0]
    assert float(normals.norm(dim=1).sum() / 2) == pytest.approx(2 * (w * h + h * d + w * d))  # no folds, no gaps
    side = {frozenset(t) for t in mesh.faces.tolist() if max(t) < xn * yn}  # z = min: cells of the first side
    assert len(side) == 2 * (xn - 1) * (yn - 1) and all(max(t) - min(t) in (xn, xn + 1) for t in side)


def test_official_mesh_files_are_used_as_they_are(tmp_path):
    cads = [build_cad("car", k, seed=0).mesh for k in range(2)]
    official = nemo_cuboids(cads, "single")[0]
    rng = np.random.default_rng(0)
    shuffled = Mesh(official.vertices[rng.permutation(len(official.vertices))], official.faces)  # any order
    (tmp_path / "CAD_single" / "car").mkdir(parents=True)
    write_off(tmp_path / "CAD_single" / "car" / "01.off", shuffled)
    memory = [torch.zeros(len(shuffled.vertices) + 2560, 8)]
    loaded = official_meshes(tmp_path / "CAD_single", "car", memory, 2560, 1000)[0]
    np.testing.assert_allclose(loaded.vertices, shuffled.vertices, atol=1e-6)  # kept, not rebuilt or reordered
    (tmp_path / "CAD" / "car").mkdir(parents=True)
    for k, cad in enumerate(cads, 1):
        write_off(tmp_path / "CAD" / "car" / f"{k:02d}.off", cad)
    rebuilt = category_cuboids(tmp_path / "CAD", "car", "single", 1000)[0]  # raw CAD: rebuilt, official order
    np.testing.assert_allclose(rebuilt.vertices, official.vertices, atol=1e-6)
