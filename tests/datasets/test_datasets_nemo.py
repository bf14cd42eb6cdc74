"""The NeMo layout in both key sets, and malformed npz as counted skips or one-line errors."""

import numpy as np
import pytest

from dataset_fixtures import nemo_npz, nemo_root, write_image
from ntdmbench.datasets.nemo_format import NemoDataset, split_root
from ntdmbench.datasets.records import DataError


def test_refactored_key_set(tmp_path):
    nemo_root(tmp_path, {"car/n01_00": {"angles": (0.5, 0.2, -0.1)}})
    ds = NemoDataset(tmp_path, "val")
    s = ds.load("car/n01_00")
    assert s.pose.angles() == (0.5, 0.2, -0.1) and s.pose.distance == 5.0 and s.pose.principal == (336.0, 128.0)
    assert s.bbox == (236.0, 48.0, 436.0, 208.0) and s.cad_index == 2 and s.category == "car"
    assert s.tags == {"dataset": "pascal3d", "split": "val", "level": "L0"}
    assert s.occluder_mask.dtype == bool and s.occluder_mask.sum() == 100 and s.occluder_mask[10, 30]
    assert s.amodal_mask is None and s.inmodal_mask is None


def test_original_key_set_crop_at_distance_5_and_full_image_occluder(tmp_path):
    occ = np.zeros((200, 300), dtype=bool)
    occ[80:120, 120:260] = True
    nemo_root(tmp_path, {"car/n01": {"occ_mask": occ}}, split="PASCAL3D_OCC_NeMo", pendix="FGL1_BGL1",
              keyset="original")
    ds = NemoDataset(tmp_path / "PASCAL3D_OCC_NeMo", "val", level=1)
    s = ds.load("car/n01")
    assert s.pose.distance == 5.0 and s.pose.principal == (336.0, 128.0)
    expected = np.zeros((256, 672), bool)
    expected[88:168, 276:556] = True  # the occluder carried through the crop rule (rate 10/5)
    np.testing.assert_array_equal(s.occluder_mask, expected)


def test_malformed_npz_are_counted_skips(tmp_path):
    nemo_root(tmp_path, {"car/good": {}, "car/nokey": {"drop": ("azimuth",)}, "car/degrees": {"angles": (140.8, 2, 0)},
                         "car/nan": {"angles": (np.nan, 0, 0)}, "car/trunc": {}})
    anno = tmp_path / "val/annotations/car"
    (anno / "trunc.npz").write_bytes((anno / "trunc.npz").read_bytes()[:200])
    write_image(tmp_path / "val/images/car/orphan.JPEG")
    nemo_npz(anno / "noimage.npz")
    ds = NemoDataset(tmp_path, "val")
    assert ds.ids() == ["car/good"]
    assert ds.skips.counts() == {"missing key": 1, "degrees in npz": 1, "bad value": 1, "unreadable npz": 1,
                                 "image without annotation": 1, "annotation without image": 1}
    messages = "\n".join(m for _, m in ds.skips.items)
    assert f"{anno}/nokey.npz: missing key(s) azimuth" in messages
    assert f"{anno}/trunc.npz: unreadable or truncated npz" in messages
    assert "orphan.JPEG: image without annotation" in messages


def test_original_distance_0_is_a_skip_and_nuisance_filter(tmp_path):
    nemo_root(tmp_path, {"car/a": {"distance": 0.0}}, keyset="original")
    ds = NemoDataset(tmp_path, "val")
    assert ds.ids() == [] and ds.skips.counts() == {"distance 0": 1}
    nemo_root(tmp_path / "ood", {"car/x_00": {"nuisance": "shape"}, "car/y_00": {"nuisance": "weather"},
                                 "bus/z_00": {}})
    shape = NemoDataset(tmp_path / "ood", "val", nuisance="shape", dataset="oodcv")
    assert shape.ids() == ["car/x_00"] and shape.load("car/x_00").tags["nuisance"] == "shape"
    assert shape.skips.counts() == {"missing key": 1}  # bus/z_00 has no nuisance key


def test_wrong_folder_names_give_one_line_errors(tmp_path):
    nemo_root(tmp_path, {"cars/n01": {}})
    with pytest.raises(DataError, match=r"no \{category\} folder for pascal3d/val; found \['cars'\]"):
        NemoDataset(tmp_path, "val").ids()
    with pytest.raises(DataError, match="no train/annotations/ folder"):
        split_root(tmp_path, "train")
    nemo_root(tmp_path, {"car/n01": {}}, split="PASCAL3D_NeMo")
    assert split_root(tmp_path / "PASCAL3D_NeMo", "val") == tmp_path / "PASCAL3D_NeMo"
    with pytest.raises(DataError):  # an original val root is never read as train
        split_root(tmp_path / "PASCAL3D_NeMo", "train")
    with pytest.raises(DataError, match="no sample with id"):
        NemoDataset(tmp_path / "PASCAL3D_NeMo", "val").load("car/missing")
