"""The crop rule: a raw record (degrees) -> NeMo layout (radians), with NeMo's box_obj and principal point,
and occluded levels whose masks land in crop coordinates and whose ids pair with the clean ones."""

import json
import math

import numpy as np
import pytest

from dataset_fixtures import obj, occluded_level, raw_release, viewpoint
from ntdmbench.datasets.crop import Crop
from ntdmbench.datasets.nemo_format import NemoDataset
from ntdmbench.datasets.oodcv import read_pose_csv
from ntdmbench.datasets.prepare import prepare_pascal3d

# Image 300x200, distance 10 -> resize_rate 2 (400x600); principal (150, 100) -> (300, 200); car crop 256x672
# starts at (y, x) = (200 - 128, 300 - 336) = (72, -36). bbox [100, 60, 200, 140] -> x 200..400, y 120..280
# -> box_obj y 48..208, x 236..436.
BOX_OBJ = [48, 208, 236, 436, 256, 672]


@pytest.fixture
def prepared(tmp_path):
    raw = raw_release(tmp_path / "PASCAL3D+_release1.1", {
        "n01": [obj(view=viewpoint(azimuth=140.81, elevation=-1.89, theta=-0.38, distance=10.0))],
        "n02": [obj(view=viewpoint(distance=0.0))],
        "n03": [obj(category="bus"), obj()],
    })
    occluded = occluded_level(tmp_path / "OccludedPASCAL3D", ["n01"], level=1)
    result = prepare_pascal3d(raw, tmp_path / "PASCAL3D_NeMo", split="val", levels=(0, 1), occluded_root=occluded,
                              categories=["car"])
    return tmp_path, result


def test_crop_rule_writes_nemo_box_obj_principal_and_radians(prepared):
    tmp_path, result = prepared
    assert result.counts == {"pascal3d/val": 1, "occluded-pascal3d/val/L1": 1}
    assert result.skips.counts() == {"distance 0": 1, "object of another class": 1}
    z = np.load(tmp_path / "PASCAL3D_NeMo/val/annotations/car/n01_00.npz", allow_pickle=True)
    np.testing.assert_array_equal(z["box_obj"], BOX_OBJ)
    np.testing.assert_array_equal(z["box"], [72, 328, 0, 672, 400, 672])  # 36 px zero padding left and right
    np.testing.assert_array_equal(z["box_ori"], [60, 140, 100, 200, 200, 300])
    np.testing.assert_array_equal(z["padding_params"], [0, 0, 36, 36, 0, 0])
    assert (float(z["px"]), float(z["py"]), float(z["distance"]), float(z["resize_rate"])) == (336, 128, 5, 2)
    np.testing.assert_array_equal(z["principal"], [150, 100])
    assert z["occ_mask"].item() is None and str(z["name"]) == "n01"
    assert (float(z["azimuth"]), float(z["elevation"]), float(z["theta"])) == (
        math.radians(140.81), math.radians(-1.89), math.radians(-0.38))
    lists = tmp_path / "PASCAL3D_NeMo/val/lists/car"
    assert (lists / "mesh02.txt").read_text() == "n01_00" and len(list(lists.glob("mesh*.txt"))) == 10
    manifest = json.loads((tmp_path / "PASCAL3D_NeMo/manifest.json").read_text())
    assert manifest["counts"] == {"pascal3d/val": 1, "occluded-pascal3d/val/L1": 1}


def test_prepared_layout_reads_back_with_csv_degrees_identical(prepared, tmp_path):
    root = tmp_path / "PASCAL3D_NeMo"
    clean = NemoDataset(root, "val", categories=["car"]).load("car/n01_00")
    assert clean.bbox == (236.0, 48.0, 436.0, 208.0)
    assert clean.pose.principal == (336.0, 128.0) and clean.pose.distance == 5.0
    assert clean.load_image().shape == (256, 672, 3)
    (tmp_path / "labels.csv").write_text("imgs,labels,azimuth,elevation,theta,distance\n"
                                         "imagenet_car_n01_0.jpg,car,140.81,-1.89,-0.38,10.0\n")
    row = read_pose_csv(tmp_path / "labels.csv").iloc[0]
    assert (row.azimuth, row.elevation, row.theta) == clean.pose.angles()


def test_occluded_level_masks_in_crop_coordinates_and_paired_ids(prepared, tmp_path):
    root = tmp_path / "PASCAL3D_NeMo"
    occ = NemoDataset(root, "val", level=1, categories=["car"], dataset="occluded-pascal3d")
    clean = NemoDataset(root, "val", categories=["car"])
    assert occ.ids() == clean.ids() == ["car/n01_00"]
    s = occ.load("car/n01_00")
    assert s.tags["level"] == "L1" and s.pose == clean.load("car/n01_00").pose
    expected_occ = np.zeros((256, 672), bool)
    expected_occ[160 - 72:240 - 72, 240 + 36:520 + 36] = True  # occluder rows 80..120, cols 120..260, x2
    np.testing.assert_array_equal(s.occluder_mask, expected_occ)
    expected_amodal = np.zeros((256, 672), bool)
    expected_amodal[48:208, 236:436] = True  # the object mask is its bbox in the fixture
    np.testing.assert_array_equal(s.amodal_mask, expected_amodal)
    np.testing.assert_array_equal(s.inmodal_mask, expected_amodal & ~expected_occ)


def test_crop_pads_and_clips_like_bboxtools():
    crop = Crop.around_principal((10.0, 10.0), 5.0, (100, 50), (64, 64))  # principal near the corner
    assert crop.origin == (-22, -22) and crop.padding == (22, 0, 22, 0, 0, 0)
    np.testing.assert_array_equal(crop.box_obj([0, 0, 49, 99]), [22, 64, 22, 64, 64, 64])
    image = np.arange(100 * 50 * 3, dtype=np.uint8).reshape(100, 50, 3)
    out = crop.apply(image)
    assert out.shape == (64, 64, 3) and not out[:22].any() and (out[22:, 22:] == image[:42, :42]).all()
