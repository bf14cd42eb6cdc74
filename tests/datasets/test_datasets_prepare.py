"""The crop rule: a raw record (degrees) -> NeMo layout (radians), with NeMo's box_obj and principal point,
and occluded levels whose masks land in crop coordinates and whose ids pair with the clean ones."""

import dataclasses
import json
import math

import numpy as np
import pytest

from dataset_fixtures import nemo_root, obj, occluded_level, raw_release, viewpoint, write_image
from ntdmbench.datasets.crop import Crop
from ntdmbench.datasets.indexed import _digest
from ntdmbench.datasets.keypoints import KEYPOINT_NAMES
from ntdmbench.datasets.nemo_format import NemoDataset
from ntdmbench.datasets.oodcv import read_pose_csv
from ntdmbench.datasets.prepare import NemoWriter, prepare_pascal3d
from ntdmbench.datasets.records import Keypoints, Pose, Sample

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


def keypoint_sample(tmp_path):
    """A car at distance 10 (crop rate 2, window origin (y, x) = (72, -36), as the fixture above)."""
    image = tmp_path / "n01.JPEG"
    write_image(image)
    xy = np.zeros((12, 2))
    xy[0], xy[1], xy[2] = (150.0, 100.0), (100.5, 60.25), (120.0, 90.0)
    visible = np.zeros(12, dtype=bool)
    visible[:2] = True  # keypoint 2 lies in the image but is hidden (e.g. under an occluder)
    return Sample("car/n01_00", "car", Pose(0.5, 0.2, -0.1, 10.0, (150.0, 100.0)), image_path=image,
                  bbox=(100.0, 60.0, 200.0, 140.0), cad_index=2,
                  keypoints=Keypoints(KEYPOINT_NAMES["car"], xy, visible))


def test_keypoints_written_as_nemo_2d_stage_and_read_back_in_crop_pixels(tmp_path):
    writer = NemoWriter(tmp_path / "out" / "val")
    writer.write(keypoint_sample(tmp_path), "")
    writer.finish()
    z = np.load(tmp_path / "out/val/annotations/car/n01_00.npz", allow_pickle=True)
    assert z["cropped_kp_list"].shape == (12, 2) and z["visible"].tolist() == [1, 1] + [0] * 10
    np.testing.assert_allclose(z["cropped_kp_list"][:3], [[128, 336], [48.5, 237], [0, 0]])  # [y, x]; hidden -> 0
    read = NemoDataset(tmp_path / "out", "val", categories=["car"]).load("car/n01_00")
    assert read.keypoints.names == KEYPOINT_NAMES["car"]
    np.testing.assert_allclose(read.keypoints.xy[:2], [[336, 128], [237, 48.5]])  # x, y in the crop image
    assert read.keypoints.visible.tolist() == [True, True] + [False] * 10
    assert read.pose.principal == tuple(read.keypoints.xy[0])  # the principal point is the crop centre


def test_absent_or_per_vertex_keypoints_read_as_none(tmp_path):
    vertices = dict(cropped_kp_list=np.zeros((1000, 2)), visible=np.ones(1000, dtype=np.int64))  # NeMo's 3D stage
    nemo_root(tmp_path, {"car/plain_00": {}, "car/vertices_00": vertices,
                         "car/semantic_00": dict(cropped_kp_list=np.ones((12, 2)), visible=np.ones(12))})
    ds = NemoDataset(tmp_path, "val")
    assert ds.load("car/plain_00").keypoints is None and ds.load("car/vertices_00").keypoints is None
    assert ds.load("car/semantic_00").keypoints.visible.all()


def test_keypoints_enter_the_index_digest_only_where_present(tmp_path):
    sample = keypoint_sample(tmp_path)
    plain = _digest(dataclasses.replace(sample, keypoints=None))
    assert plain == "car;0.5,0.2,-0.1,10,150,100;100,60,200,140;2"  # unchanged for data without keypoints
    moved = dataclasses.replace(sample.keypoints, xy=sample.keypoints.xy + 1)
    assert len({plain, _digest(sample), _digest(dataclasses.replace(sample, keypoints=moved))}) == 3
