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
