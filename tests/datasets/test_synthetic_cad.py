import numpy as np
import pytest

from ntdmbench.datasets.records import CATEGORIES
from ntdmbench.datasets.synthetic import cad
from ntdmbench.models.meshes import read_off


def signed_volume(mesh):
    tri = mesh.vertices[mesh.faces]
    return np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_part_is_closed_and_faces_outward(category):
    for subtype in range(cad.SUBTYPES[category]):
        parts = cad.BUILDERS[category](np.random.default_rng([0, CATEGORIES.index(category), subtype]))
        assert all(signed_volume(p) > 0 for p in parts), f"{category} {subtype}: an inward-facing part"


@pytest.mark.parametrize("category", CATEGORIES)
def test_subtypes_differ_and_have_cad_scale(category):
    meshes = [cad.build_cad(category, k) for k in range(cad.SUBTYPES[category])]
    extents = np.array([m.vertices.max(0) - m.vertices.min(0) for m in meshes])
    assert 4 <= len(meshes) <= 10
    assert (extents.max(axis=1) > 0.5).all() and (extents.max(axis=1) < 1.3).all()
    assert len({m.vertices.tobytes() for m in meshes}) == len(meshes)
    assert np.abs(np.vstack([m.vertices for m in meshes])).max() < 0.7  # centred on the origin


def test_elongated_categories_run_along_y_and_stand_on_z():
    for category in ("car", "bus", "train", "aeroplane", "bicycle", "motorbike", "boat"):
        ext = np.ptp(cad.build_cad(category, 0).vertices, axis=0)
        assert ext[1] == ext.max(), category
    bottle = np.ptp(cad.build_cad("bottle", 0).vertices, axis=0)
    assert bottle[2] == bottle.max()


def test_library_writes_pascal3d_layout_deterministically(tmp_path):
    a = cad.write_cad_library(tmp_path / "a", categories=("car", "chair"), seed=3)
    b = cad.write_cad_library(tmp_path / "b", categories=("car", "chair"), seed=3)
    assert [p.name for p in a["car"]] == [f"{k:02d}.off" for k in range(1, 11)]
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a["car"], b["car"]))
    mesh = read_off(a["chair"][0])
    assert np.allclose(mesh.vertices, cad.build_cad("chair", 0, seed=3).vertices, atol=1e-8)
    other = cad.write_cad_library(tmp_path / "c", categories=("car",), seed=4)
    assert other["car"][0].read_bytes() != a["car"][0].read_bytes()
