"""Raw PASCAL3D+ records: degrees -> radians, the ``_coarse`` fallback, and counted skips for bad records."""

import math

import numpy as np
import pytest

from dataset_fixtures import obj, raw_release, viewpoint, write_image
from ntdmbench.datasets.pascal3d import Pascal3DRaw
from ntdmbench.datasets.records import DataError


def test_reads_pose_in_radians_bbox_and_ids(tmp_path):
    root = raw_release(tmp_path / "PASCAL3D+_release1.1", {
        "n0001": [obj(view=viewpoint(azimuth=30.0, elevation=10.0, theta=-5.0, distance=7.5, px=151.5, py=99.0)),
                  obj(category="bus")],
        "n0002": [obj(bbox=(10, 20, 110, 90), view=viewpoint(azimuth=None, elevation=None))],
    })
    ds = Pascal3DRaw(root, "val")
    assert ds.ids() == ["car/n0001_00", "car/n0002_00"]
    s = ds.load("car/n0001_00")
    assert s.pose.angles() == pytest.approx((math.radians(30), math.radians(10), math.radians(-5)), abs=1e-12)
    assert (s.pose.distance, s.pose.principal, s.pose.focal, s.pose.viewport) == (7.5, (151.5, 99.0), 1.0, 3000.0)
    assert s.bbox == (100.0, 60.0, 200.0, 140.0) and s.cad_index == 2
    assert s.tags == {"dataset": "pascal3d", "split": "val", "level": "L0", "subset": "imagenet"}
    assert s.load_image().shape == (200, 300, 3)
    coarse = ds.load("car/n0002_00")  # empty azimuth/elevation -> *_coarse (45, 15 degrees)
    assert coarse.pose.angles()[:2] == pytest.approx((math.radians(45), math.radians(15)))
    assert coarse.bbox == (10.0, 20.0, 110.0, 90.0)
    assert len(ds.skips) == 0 and len(ds.index_hash()) == 16


def test_malformed_records_are_counted_skips_with_the_file(tmp_path):
    root = raw_release(tmp_path / "rel", {
        "good": [obj()],
        "dist0": [obj(view=viewpoint(distance=0.0))],
        "noview": [obj(view=np.zeros((0, 0)))],
        "noangle": [obj(view={k: v for k, v in viewpoint(azimuth=None).items() if k != "azimuth_coarse"})],
        "nobbox": [obj(drop=("bbox",))],
        "badcad": [obj(cad_index=11)],
    })
    (root / "Annotations" / "car_imagenet" / "trunc.mat").write_bytes(b"MATLAB 5.0 MAT-file\x00\x01")
    write_image(root / "Images" / "car_imagenet" / "trunc.JPEG")
    write_image(root / "Images" / "car_imagenet" / "noanno.JPEG")
    with open(root / "Image_sets" / "car_imagenet_val.txt", "a") as f:
        f.write("trunc\nnoanno\nnoimage\n")
    ds = Pascal3DRaw(root, "val")
    assert ds.ids() == ["car/good_00"]
    assert ds.skips.counts() == {"distance 0": 1, "empty viewpoint": 2, "missing key": 1,
                                 "cad_index out of range": 1, "unreadable annotation": 1,
                                 "image without annotation": 1, "missing image": 1}
    messages = "\n".join(m for _, m in ds.skips.items)
    assert "dist0.mat: object 0: distance 0, no valid 3D annotation" in messages
    assert "noangle.mat: object 0: viewpoint has no azimuth" in messages
    assert "nobbox.mat: object 0: missing key 'bbox'" in messages
    assert ds.describe()["skipped"] == 8


def test_first_object_rule_and_wrong_root(tmp_path):
    root = raw_release(tmp_path / "rel", {"a": [obj(category="bus"), obj()], "b": [obj(), obj()]})
    first = Pascal3DRaw(root, "val", objects="first")
    assert first.ids() == ["car/b_00"]
    assert first.skips.counts() == {"object of another class": 1}
    assert Pascal3DRaw(root, "val").ids() == ["car/a_01", "car/b_00", "car/b_01"]
    with pytest.raises(DataError, match="no Annotations/ folder"):
        Pascal3DRaw(tmp_path, "val")
    with pytest.raises(DataError, match="no {category}_imagenet folder"):
        Pascal3DRaw(root, "val", categories=["bicycle"]).ids()
    (root / "Image_sets" / "car_imagenet_val.txt").unlink()
    with pytest.raises(DataError, match="car_imagenet_val.txt: list file not found"):
        Pascal3DRaw(root, "val").ids()


def test_index_hash_follows_the_annotation(tmp_path):
    root = raw_release(tmp_path / "rel", {"a": [obj()]})
    before = Pascal3DRaw(root, "val").index_hash()
    raw_release(root, {"a": [obj(view=viewpoint(azimuth=31.0))]})
    assert Pascal3DRaw(root, "val").index_hash() != before
