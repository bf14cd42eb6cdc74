"""Occluded PASCAL3D+ as released (pose from the clean .mat) and OOD-CV lists / challenge CSV."""

import math

import numpy as np
import pytest

from dataset_fixtures import obj, object_mask, occluded_level, occluder_mask, raw_release, viewpoint, write_image, \
    write_record
from ntdmbench.datasets.occluded import OccludedRaw
from ntdmbench.datasets.oodcv import OodcvRaw, read_pose_csv
from ntdmbench.datasets.pascal3d import Pascal3DRaw
from ntdmbench.datasets.records import DataError


def test_occluded_raw_masks_in_image_coordinates_and_clean_pose(tmp_path):
    clean = raw_release(tmp_path / "PASCAL3D+_release1.1", {"n01": [obj()], "n02": [obj()]})
    root = occluded_level(tmp_path / "OccludedPASCAL3D", ["n01", "n02", "n03"], level=2)
    (root / "annotations/carFGL2_BGL2/n02.npz").unlink()
    ds = OccludedRaw(root, 2, clean)
    assert ds.ids() == ["car/n01_00"] == [i for i in Pascal3DRaw(clean, "val").ids() if i.startswith("car/n01")]
    assert ds.skips.counts() == {"image without annotation": 2}  # n02: no npz; n03: no clean .mat
    s = ds.load("car/n01_00")
    assert s.pose == Pascal3DRaw(clean, "val").load("car/n01_00").pose
    assert s.tags == {"dataset": "occluded-pascal3d", "split": "val", "level": "L2"}
    assert s.image_path.parent.name == "carFGL2_BGL2"
    np.testing.assert_array_equal(s.occluder_mask, occluder_mask())
    np.testing.assert_array_equal(s.amodal_mask, object_mask() > 10)
    np.testing.assert_array_equal(s.inmodal_mask, (object_mask() > 10) & ~occluder_mask())


def test_occluded_raw_bad_mask_shape_and_wrong_level(tmp_path):
    clean = raw_release(tmp_path / "rel", {"n01": [obj()]})
    root = occluded_level(tmp_path / "occ", ["n01"], level=1)
    np.savez(root / "annotations/carFGL1_BGL1/n01.npz", occluder_mask=np.zeros((10, 10), bool))
    with pytest.raises(DataError, match=r"n01.npz: occluder_mask has shape \(10, 10\), the image is \(200, 300\)"):
        OccludedRaw(root, 1, clean).load("car/n01_00")
    with pytest.raises(DataError, match="no {category}FGL3_BGL3 folder"):
        OccludedRaw(root, 3, clean).ids()
    with pytest.raises(ValueError, match="occlusion level must be 1, 2 or 3"):
        OccludedRaw(root, 4, clean)


def test_oodcv_raw_lists_iid_and_listed_object(tmp_path):
    root = tmp_path / "ood_cv"
    for name, objects in {"a": [obj(category="bus"), obj(view=viewpoint(azimuth=200.0))], "b": [obj()],
                          "c": [obj(view=viewpoint(distance=0.0))]}.items():
        write_image(root / "images/car" / f"{name}.JPEG")
        write_record(root / "annotations/car" / f"{name}.mat", objects)
    (root / "lists").mkdir()
    (root / "lists/car_shape.txt").write_text("a 1\nc 0\nb 3\n")
    (root / "lists/car_all.txt").write_text("a 1\nb 0\nc 0\n")
    shape = OodcvRaw(root, "shape", categories=["car"])
    assert shape.ids() == ["car/a_01"]
    assert shape.load("car/a_01").pose.azimuth == pytest.approx(math.radians(200))
    assert shape.load("car/a_01").tags == {"dataset": "oodcv", "split": "test", "nuisance": "shape"}
    assert shape.skips.counts() == {"distance 0": 1, "listed object missing": 1}
    assert OodcvRaw(root, "iid", categories=["car"]).ids() == ["car/b_00"]
    assert OodcvRaw(root, "weather", categories=["car"]).ids() == []
    (root / "lists/car_pose.txt").write_text("a\n")
    with pytest.raises(DataError, match=r"car_pose.txt: line 'a' is not"):
        OodcvRaw(root, "pose", categories=["car"]).ids()


def test_read_pose_csv_radians_and_errors(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("imgs,labels,azimuth,elevation,theta,distance\n"
                    "imagenet_aeroplane_n02690373_10203_1.jpg,aeroplane,140.81,-1.89,-0.38,7.57\n"
                    "x.jpg,car,,10,0,5\n")
    table = read_pose_csv(path)
    assert list(table.columns) == ["imgs", "labels", "azimuth", "elevation", "theta", "distance"]
    assert table.azimuth[0] == np.deg2rad(140.81) and table.distance[0] == 7.57 and math.isnan(table.azimuth[1])
    path.write_text("imgs,labels,azimuth,elevation,distance\nx.jpg,car,1,2,3\n")
    with pytest.raises(DataError, match="labels.csv: missing column\\(s\\) theta"):
        read_pose_csv(path)
    path.write_text("imgs,labels,azimuth,elevation,theta,distance\nx.jpg,car,1,abc,0,5\n")
    with pytest.raises(DataError, match="row 2: elevation 'abc' is not a number"):
        read_pose_csv(path)
    with pytest.raises(FileNotFoundError, match="pose CSV not found"):
        read_pose_csv(tmp_path / "none.csv")
