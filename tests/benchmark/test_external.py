import json
import math

import numpy as np
import pandas as pd
import pytest

from ntdmbench.benchmark.cli import main
from ntdmbench.benchmark.external import score_pose_csv

COLUMNS = ["imgs", "labels", "azimuth", "elevation", "theta", "distance"]


def write(path, rows):
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


@pytest.fixture
def files(tmp_path):
    gt = [
        ["imagenet_car_a_1.jpg", "car", 140.81, -1.89, -0.38, 7.57],
        ["imagenet_car_b_1.jpg", "car", 10.0, 20.0, 0.0, 5.0],
        ["imagenet_bus_c_1.jpg", "bus", 200.0, 10.0, 5.0, 5.0],
        ["imagenet_bus_d_1.jpg", "bus", 90.0, 0.0, 0.0, 5.0],
    ]
    pred = [
        ["imagenet_car_a_1.jpg", "car", 140.81 + 20.0, -1.89, -0.38, 7.0],  # 20 deg about z: < pi/6, > pi/18
        ["imagenet_car_b_1.jpg", "car", 10.0, 20.0, 5.0, 5.0],  # 5 deg in-plane: < pi/18
        ["imagenet_bus_c_1.jpg", "bus", float("nan"), 10.0, 5.0, 5.0],  # NaN -> error pi
        ["imagenet_bus_c_1.jpg", "bus", 200.0, 10.0, 5.0, 5.0],  # duplicate, ignored
        ["imagenet_zzz_1.jpg", "car", 0.0, 0.0, 0.0, 5.0],  # matches nothing
    ]  # bus_d has no prediction
    return write(tmp_path / "pred.csv", pred), write(tmp_path / "gt.csv", gt)


def test_challenge_csv_scoring(files):
    pred, gt = files
    s = score_pose_csv(pred, gt)
    assert s["n"] == 4 and s["n_failed"] == 2
    assert s["acc_pi6"] == 50.0 and s["acc_pi18"] == 25.0
    assert s["median_err_deg"] == pytest.approx((20.0 + 180.0) / 2)
    assert s["per_category"]["car"]["acc_pi18"] == 50.0 and s["per_category"]["car"]["median_err_deg"] == pytest.approx(12.5)
    assert s["per_category"]["bus"]["acc_pi6"] == 0.0 and s["per_category"]["bus"]["n_failed"] == 2
    problems = " | ".join(s["problems"])
    assert "1 duplicate rows" in problems and "1 rows match no ground-truth" in problems
    assert "no prediction for 1 ground-truth rows" in problems


def test_score_cli_writes_the_documented_json(files, tmp_path, capsys):
    pred, gt = files
    out = tmp_path / "scores.json"
    assert main(["score", "--predictions", str(pred), "--ground-truth", str(gt), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in ("acc_pi6", "acc_pi18", "median_err_deg", "n", "n_failed", "per_category"):
        assert key in data
    assert set(data["per_category"]["car"]) >= {"acc_pi6", "acc_pi18", "median_err_deg", "n", "n_failed"}
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "car" in captured.out


def test_degrees_are_converted(tmp_path):
    gt = write(tmp_path / "gt.csv", [["x.jpg", "car", 30.0, 10.0, 0.0, 5.0]])
    pred = write(tmp_path / "p.csv", [["x.jpg", "car", 30.0 + 9.9, 10.0, 0.0, 5.0]])
    s = score_pose_csv(pred, gt)
    assert s["acc_pi18"] == 100.0 and s["median_err_deg"] == pytest.approx(9.9, abs=1e-9)
    assert not math.isnan(s["median_err_deg"]) and np.isfinite(s["acc_pi6"])


def test_missing_column_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("imgs,labels,azimuth\nx.jpg,car,1\n")
    gt = write(tmp_path / "gt.csv", [["x.jpg", "car", 30.0, 10.0, 0.0, 5.0]])
    assert main(["score", "--predictions", str(bad), "--ground-truth", str(gt)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and err.count("\n") == 1
