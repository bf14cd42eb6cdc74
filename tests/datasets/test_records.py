import json
import math

import numpy as np
import pytest
from PIL import Image

from ntdmbench.datasets.records import DataError, Prediction, mask_to_rle, read_rgb, rle_to_mask


@pytest.mark.parametrize("first", [False, True])
def test_rle_round_trip(first):
    rng = np.random.default_rng(0)
    mask = rng.random((13, 17)) < 0.3
    mask[0, 0] = first
    assert np.array_equal(rle_to_mask(mask_to_rle(mask)), mask)
    assert np.array_equal(rle_to_mask(mask_to_rle(np.zeros((3, 4), bool))), np.zeros((3, 4), bool))
    assert np.array_equal(rle_to_mask(mask_to_rle(np.ones((3, 4), bool))), np.ones((3, 4), bool))


def test_prediction_json_round_trip_keeps_masks_and_non_finite_values():
    mask = np.eye(5, dtype=bool)
    p = Prediction(id="car/x", category="car", azimuth=1.0, elevation=float("nan"), theta=float("inf"),
                   amodal_mask=mask, time_s=0.5, extra={"loss": 0.1})
    q = Prediction.from_json(json.loads(json.dumps(p.to_json())))
    assert q.azimuth == 1.0 and q.elevation is None and q.theta == math.inf
    assert not q.has_pose
    assert np.array_equal(q.amodal_mask, mask) and q.extra == {"loss": 0.1}


def test_read_rgb_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_rgb(tmp_path / "missing.png")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError, match="corrupt.jpg: cannot read image"):
        read_rgb(bad)
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "gray.png")
    assert read_rgb(tmp_path / "gray.png").shape == (4, 6, 3)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2
def test_masks_are_coco_rle_that_pycocotools_decodes_to_the_same_mask():
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:37, :53]
    masks = [rng.random((37, 53)) > 0.6, ((yy - 18) / 9) ** 2 + ((xx - 20) / 14) ** 2 <= 1, np.zeros((4, 5), bool)]
    for mask in masks:
        rle = Prediction(id="car/1", amodal_mask=mask).to_json()["amodal_mask"]
        assert isinstance(rle["counts"], str) and rle["size"] == list(mask.shape)
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        assert np.array_equal(decoded, mask)  # IoU 1 against the mask that was written
        assert coco_mask.area(coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))) == mask.sum()


def test_the_old_row_major_format_is_refused_naming_the_file(tmp_path):
    from ntdmbench.benchmark.store import RunDir

    with pytest.raises(DataError, match="old row-major run-length format"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2, 1]})
    run_dir = RunDir(tmp_path)
    run_dir.predictions_dir.mkdir()
    run_dir.shard(0).write_text('{"id": "car/1", "amodal_mask": {"size": [2, 2], "counts": [1, 2, 1]}}\n')
    with pytest.raises(DataError, match=r"shard-000.jsonl: car/1: mask in the old row-major"):
        run_dir.read_predictions()
