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
        assembly = cad.BUILDERS[category](np.random.default_rng([0, CATEGORIES.index(category), subtype]))
        assert all(signed_volume(p) > 0 for _, p in assembly.parts), f"{category} {subtype}: an inward-facing part"


@pytest.mark.parametrize("category", CATEGORIES)
def test_subtypes_differ_and_have_cad_scale(category):
    meshes = [cad.build_cad(category, k).mesh for k in range(cad.SUBTYPES[category])]
    extents = np.array([m.vertices.max(0) - m.vertices.min(0) for m in meshes])
    assert 4 <= len(meshes) <= 10
    assert (extents.max(axis=1) > 0.5).all() and (extents.max(axis=1) < 1.3).all()
    assert len({m.vertices.tobytes() for m in meshes}) == len(meshes)
    assert np.abs(np.vstack([m.vertices for m in meshes])).max() < 0.7  # centred on the origin


def test_elongated_categories_run_along_y_and_stand_on_z():
    for category in ("car", "bus", "train", "aeroplane", "bicycle", "motorbike", "boat"):
        ext = np.ptp(cad.build_cad(category, 0).mesh.vertices, axis=0)
        assert ext[1] == ext.max(), category
    bottle = np.ptp(cad.build_cad("bottle", 0).mesh.vertices, axis=0)
    assert bottle[2] == bottle.max()


def test_library_writes_pascal3d_layout_deterministically(tmp_path):
    a = cad.write_cad_library(tmp_path / "a", categories=("car", "chair"), seed=3)
    b = cad.write_cad_library(tmp_path / "b", categories=("car", "chair"), seed=3)
    assert [p.name for p in a["car"]] == [f"{k:02d}.off" for k in range(1, 11)]
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a["car"], b["car"]))
    mesh = read_off(a["chair"][0])
    assert np.allclose(mesh.vertices, cad.build_cad("chair", 0, seed=3).mesh.vertices, atol=1e-8)
    other = cad.write_cad_library(tmp_path / "c", categories=("car",), seed=4)
    assert other["car"][0].read_bytes() != a["car"][0].read_bytes()


@pytest.mark.parametrize("category", CATEGORIES)
def test_keypoints_lie_on_the_model_and_follow_its_sides(category):
    """Every PASCAL3D+ keypoint sits on (or within a wheel's width of) the model, and left/right pairs
    lie on the object's own left (+x: it faces -y with z up) and right."""
    from ntdmbench.datasets.keypoints import KEYPOINT_NAMES

    names = KEYPOINT_NAMES[category]
    for subtype in range(cad.SUBTYPES[category]):
        model = cad.build_cad(category, subtype)
        lo, hi = model.mesh.vertices.min(0) - 0.03, model.mesh.vertices.max(0) + 0.03
        assert ((model.keypoints >= lo) & (model.keypoints <= hi)).all(), (category, subtype)
        for k, name in enumerate(names):
            if "left" in name and name.replace("left", "right") in names:
                right = model.keypoints[names.index(name.replace("left", "right"))]
                assert model.keypoints[k][0] > right[0], (category, subtype, name)


def test_parts_are_named_and_cover_every_face():
    model = cad.build_cad("car", 0)
    assert {"body", "windows", "tyres", "headlights", "tail_lights", "plates"} <= set(model.part_names)
    assert model.face_parts.shape == (len(model.mesh.faces),)
    headlights = model.mesh.vertices[model.mesh.faces[model.face_parts == model.part_names.index("headlights")]]
    tail = model.mesh.vertices[model.mesh.faces[model.face_parts == model.part_names.index("tail_lights")]]
    assert headlights[..., 1].max() < tail[..., 1].min()  # headlights at the front (-y), tail lights at the back
