"""Scoring: predictions -> per-sample rows -> pooled metrics, driven by the metric catalog."""

import math

import numpy as np
import pytest

from ntdmbench.benchmark import metrics as M
from ntdmbench.benchmark import scoring
from ntdmbench.datasets.records import Pose, Prediction, Sample


def _sample(k: int, category: str = "car") -> Sample:
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    return Sample(id=f"{category}/{k}", category=category, pose=Pose(0.3 * k, 0.2, 0.1), amodal_mask=mask)


def _prediction(sample: Sample, d_azimuth: float, category: str | None = None) -> Prediction:
    return Prediction(id=sample.id, category=category or sample.category, azimuth=sample.pose.azimuth + d_azimuth,
                      elevation=sample.pose.elevation, theta=sample.pose.theta, amodal_mask=sample.amodal_mask)


def test_a_failed_or_missing_prediction_scores_pi_iou_zero_and_a_wrong_class():
    sample = _sample(0)
    failed = scoring.score_sample(sample, Prediction(id=sample.id, failure="boom"), {"pose", "amodal", "class"})
    missing = scoring.score_sample(sample, None, {"pose", "amodal", "class"})
    for row in (failed, missing):
        assert row["rot_err"] == math.pi and row["pose_missing"]
        assert row["amodal_iou"] == 0.0 and row["class_correct"] is False
    assert (failed["status"], missing["status"]) == ("failed", "missing")


def test_only_declared_tasks_are_scored():
    sample = _sample(0)
    row = scoring.score_sample(sample, _prediction(sample, 0.0), {"pose"})
    assert "rot_err" in row and "amodal_iou" not in row and "class_correct" not in row


def test_summary_equals_the_metric_functions_on_the_same_samples():
    samples = [_sample(k, "car" if k % 2 else "bus") for k in range(10)]
    offsets = [0.01, 0.2, 0.4, 0.6, 1.0, 2.0, 0.05, 0.3, 0.9, 3.0]
    preds = {s.id: _prediction(s, d, "car" if k < 6 else "bus") for k, (s, d) in enumerate(zip(samples, offsets))}
    rows, summary = scoring.score(samples, preds, {"pose", "amodal", "class"})
    errors = np.array([r["rot_err"] for r in rows])
    assert summary["acc_pi6"] == M.pose_accuracy(errors, M.PI_6)
    assert summary["acc_pi18"] == M.pose_accuracy(errors, M.PI_18)
    assert summary["median_err_deg"] == M.median_error_deg(errors)
    assert summary["top1"] == M.top1([preds[s.id].category for s in samples], [s.category for s in samples])
    assert summary["amodal_iou"] == 100.0
    assert summary["ci95"]["acc_pi6"] == list(M.wilson_interval(int(np.sum(errors < M.PI_6)), 10))
    assert (summary["n"], summary["n_pose"], summary["n_amodal"], summary["n_class"]) == (10, 10, 10, 10)
    assert set(summary["per_category"]) == {"bus", "car"}
    assert summary["per_category"]["car"]["n"] == 5


def test_a_new_metric_is_one_catalog_entry(monkeypatch):
    def below_pi3(errors):
        return M.pose_accuracy(errors, math.pi / 3)

    spec = M.MetricSpec("acc_pi3", "pose", "rot_err", "Acc@π/3 (%) ↑", r"Pose ACC $\frac{\pi}{3}$", "%", True,
                        "rotation error < pi/3", below_pi3, lambda errors, seed: (0.0, 100.0))
    monkeypatch.setitem(M.METRICS, "acc_pi3", spec)
    samples = [_sample(k) for k in range(4)]
    preds = {s.id: _prediction(s, d) for s, d in zip(samples, (0.1, 0.8, 1.2, 2.0))}
    _, summary = scoring.score(samples, preds, {"pose"})
    assert summary["acc_pi3"] == pytest.approx(50.0)
    assert summary["ci95"]["acc_pi3"] == [0.0, 100.0]
