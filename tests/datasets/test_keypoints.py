"""PASCAL3D+'s CAD keypoint file: written as the release stores it, read back per cad_index in NeMo's order."""

import numpy as np
import pytest
import scipy.io

from ntdmbench.datasets.keypoints import KEYPOINT_NAMES, read_cad_keypoints, write_cad_mat
from ntdmbench.datasets.records import DataError
from ntdmbench.models.meshes import Mesh

NAMES = KEYPOINT_NAMES["car"]


def models():
    rng = np.random.default_rng(0)
    mesh = Mesh(rng.normal(size=(5, 3)), np.array([[0, 1, 2], [2, 3, 4]], dtype=np.int64))
    full = {name: rng.normal(size=3) for name in NAMES}
    partial = {name: rng.normal(size=(1, 3)) for name in NAMES[3:]}  # lacks the first three
    return [(mesh, full), (Mesh(mesh.vertices * 2, mesh.faces), partial)]


def test_round_trip_by_one_based_cad_index_with_nan_for_missing(tmp_path):
    (tmp_path / "CAD").mkdir()
    written = models()
    write_cad_mat(tmp_path / "CAD" / "car.mat", written, NAMES)
    got = read_cad_keypoints(tmp_path, "car")
    assert sorted(got) == [1, 2] and got[1].shape == (12, 3)
    np.testing.assert_array_equal(got[1], np.stack([written[0][1][n] for n in NAMES]))
    assert np.isnan(got[2][:3]).all()
    np.testing.assert_array_equal(got[2][3:], np.concatenate([written[1][1][n] for n in NAMES[3:]]))


def test_file_is_pascal3d_layout_and_byte_stable(tmp_path):
    path = write_cad_mat(tmp_path / "car.mat", models(), NAMES)
    first = path.read_bytes()
    assert write_cad_mat(tmp_path / "car.mat", models(), NAMES).read_bytes() == first
    raw = scipy.io.loadmat(path)["car"]  # as wkentaro/pascal3d reads CAD/{cls}.mat
    assert raw.shape == (1, 2) and raw.dtype.names[:2] == ("vertices", "faces")
    np.testing.assert_array_equal(raw[0, 0]["faces"], [[1, 2, 3], [3, 4, 5]])  # 1-based
    np.testing.assert_allclose(raw[0, 1]["vertices"], models()[1][0].vertices)
    assert raw[0, 1][NAMES[0]].size == 0 and raw[0, 1][NAMES[5]].shape == (1, 3)


def test_single_model_file_and_missing_or_malformed_files_are_one_line_errors(tmp_path):
    (tmp_path / "CAD").mkdir()
    write_cad_mat(tmp_path / "CAD" / "car.mat", models()[:1], NAMES)
    assert list(read_cad_keypoints(tmp_path, "car")) == [1]  # a 1x1 struct array squeezes to one struct
    with pytest.raises(DataError, match=r"CAD/bus\.mat: CAD keypoint file not found"):
        read_cad_keypoints(tmp_path, "bus")
    (tmp_path / "CAD" / "sofa.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=r"CAD/sofa\.mat: cannot read \.mat"):
        read_cad_keypoints(tmp_path, "sofa")
    scipy.io.savemat(tmp_path / "CAD" / "boat.mat", {"other": np.zeros(3)})
    with pytest.raises(DataError, match=r"boat\.mat: no struct array named 'boat'"):
        read_cad_keypoints(tmp_path, "boat")
    scipy.io.savemat(tmp_path / "CAD" / "bus.mat", {"bus": {"vertices": np.zeros((2, 3)), "tail": np.zeros(3),
                                                           KEYPOINT_NAMES["bus"][0]: np.zeros(2)}})
    with pytest.raises(DataError, match=rf"bus\.mat: model 1 keypoint {KEYPOINT_NAMES['bus'][0]} has 2 values"):
        read_cad_keypoints(tmp_path, "bus")
