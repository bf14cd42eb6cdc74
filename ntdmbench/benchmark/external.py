"""Score an outside method's predictions file in the OOD-CV challenge CSV format.

Both files have the columns ``imgs,labels,azimuth,elevation,theta,distance`` with angles in degrees;
rows are matched by ``imgs``. Nothing is dropped silently: ground-truth rows without a prediction
score error pi and are counted in ``n_failed``; duplicate and unmatched rows are listed in
``problems``, and so is a file whose angles all look like radians. An elevation outside ±90° cannot be
a viewpoint: the file is refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ntdmbench.benchmark import metrics as M
from ntdmbench.benchmark.scoring import aggregate
from ntdmbench.datasets.oodcv import read_pose_csv
from ntdmbench.datasets.records import DataError

ANGLES = ["azimuth", "elevation", "theta"]
RADIAN_LOOKING = 2 * math.pi + 1e-6
"""In degrees, every angle of a whole file within ±2π (±6.3°) means the file was written in radians."""


def _check_angles(df: pd.DataFrame, path: str | Path, problems: list[str]) -> None:
    """Refuse an impossible elevation; warn when every angle of the file is as small as a radian value."""
    elevation = np.degrees(df["elevation"].to_numpy(np.float64))
    outside = np.flatnonzero(np.abs(elevation) > 90.0 + 1e-6)
    if outside.size:
        row = int(outside[0])
        raise DataError(f"{path}: row {row + 2}: elevation {elevation[row]:g} is outside ±90 degrees "
                        f"({outside.size} such row(s)); the CSV holds degrees")
    angles = np.degrees(df[ANGLES].to_numpy(np.float64))
    finite = angles[np.isfinite(angles)]
    if len(df) > 1 and finite.size and np.abs(finite).max() <= RADIAN_LOOKING and np.abs(finite).max() > 0:
        problems.append(f"{path}: every angle is within ±2π (largest {np.abs(finite).max():.3g}); "
                        f"they look like radians, but the CSV holds degrees")


def _first_of_duplicates(df: pd.DataFrame, path: str | Path, problems: list[str]) -> pd.DataFrame:
    dup = df["imgs"].duplicated(keep="first")
    if dup.any():
        names = df.loc[dup, "imgs"].unique()
        problems.append(f"{path}: {int(dup.sum())} duplicate rows (first kept), e.g. {', '.join(names[:3])}")
    return df.loc[~dup]


def score_pose_csv(predictions: str | Path, ground_truth: str | Path) -> dict[str, Any]:
    problems: list[str] = []
    gt = _first_of_duplicates(read_pose_csv(ground_truth), ground_truth, problems)
    pred = _first_of_duplicates(read_pose_csv(predictions), predictions, problems)
    _check_angles(gt, ground_truth, problems)
    _check_angles(pred, predictions, problems)
    extra = sorted(set(pred["imgs"]) - set(gt["imgs"]))
    if extra:
        problems.append(f"{predictions}: {len(extra)} rows match no ground-truth image, e.g. {', '.join(extra[:3])}")
    merged = gt.merge(pred[["imgs", *ANGLES]], on="imgs", how="left", suffixes=("_gt", ""), indicator=True)
    unmatched = merged["_merge"] == "left_only"
    if unmatched.any():
        problems.append(f"{predictions}: no prediction for {int(unmatched.sum())} ground-truth rows (scored as error pi)")
    errors = M.pose_error(merged[ANGLES].to_numpy(np.float64), merged[[f"{a}_gt" for a in ANGLES]].to_numpy(np.float64))
    finite = np.isfinite(merged[ANGLES].to_numpy(np.float64)).all(axis=1)
    rows = [
        {"id": img, "category": label, "status": "missing" if lost else "ok",
         "rot_err": float(err), "rot_err_deg": math.degrees(err), **({} if ok else {"pose_missing": True})}
        for img, label, err, ok, lost in zip(merged["imgs"], merged["labels"], errors, finite, unmatched)
    ]
    summary = aggregate(rows)
    summary["problems"] = problems
    return summary
