"""Score an outside method's predictions file in the OOD-CV challenge CSV format.

Both files have the columns ``imgs,labels,azimuth,elevation,theta,distance`` with angles in degrees;
rows are matched by ``imgs``. Nothing is dropped silently: ground-truth rows without a prediction
score error pi and are counted in ``n_failed``; duplicate and unmatched rows are listed in
``problems``.
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

ANGLES = ["azimuth", "elevation", "theta"]


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
