"""Scoring in two stages: predictions -> per-sample rows (``samples.jsonl``) -> aggregates.

Every aggregate is derived from the per-sample rows, so breakdowns, intervals and re-scoring need no
model. Only the tasks a model declares are scored; a sample without a usable prediction scores error
pi, IoU 0 and a wrong class, and is counted in ``n_failed``; so is a sample whose annotation or image
cannot be used (also counted in ``n_unusable``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from ntdmbench.benchmark import metrics as M
from ntdmbench.datasets.records import Prediction, Sample

AVERAGING = (
    "pooled over samples (each object counts once); per_category holds per-category pooled values; "
    "missing/NaN/failed predictions count as error pi, IoU 0, wrong class"
)


def score_sample(sample: Sample, pred: Prediction | None, tasks: Iterable[str]) -> dict[str, Any]:
    """One per-sample row: ids and tags, status, and the errors for each declared task."""
    tasks = set(tasks)
    status = "missing" if pred is None else ("failed" if pred.failure else "ok")
    usable = pred if status == "ok" else None
    row: dict[str, Any] = {"id": sample.id, "category": sample.category, **sample.tags, "status": status}
    if pred is not None:
        row["failure"] = pred.failure
        row["time_s"] = pred.time_s
    if "pose" in tasks and sample.pose is not None:
        if usable is not None and usable.has_pose:
            err = float(M.pose_error([usable.azimuth, usable.elevation, usable.theta], sample.pose.angles()))
            row["pred_pose"] = [usable.azimuth, usable.elevation, usable.theta]
        else:
            err = math.pi
            row["pose_missing"] = True
        row["rot_err"] = err
        row["rot_err_deg"] = math.degrees(err)
    if "amodal" in tasks and sample.amodal_mask is not None:
        row["amodal_iou"] = float(M.amodal_iou(usable.amodal_mask if usable else None, sample.amodal_mask))
    if "class" in tasks:
        pred_category = usable.category if usable else None
        row["pred_category"] = pred_category
        row["class_correct"] = pred_category == sample.category
    return row


def unusable_row(sample_id: str, category: str, why: str, tasks: Iterable[str]) -> dict[str, Any]:
    """The row of a selected sample whose annotation or image cannot be used: a failure on every task."""
    tasks = set(tasks)
    row: dict[str, Any] = {"id": sample_id, "category": category, "status": "unusable", "failure": why}
    if "pose" in tasks:
        row.update(rot_err=math.pi, rot_err_deg=180.0, pose_missing=True)
    if "amodal" in tasks:
        row["amodal_iou"] = 0.0
    if "class" in tasks:
        row.update(pred_category=None, class_correct=False)
    return row


def summarize(rows: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Pooled metrics, intervals and counts for a set of per-sample rows."""
    out: dict[str, Any] = {
        "n": len(rows),
        "n_failed": sum(r.get("status") != "ok" or bool(r.get("pose_missing")) for r in rows),
        "n_missing": sum(r.get("status") == "missing" for r in rows),
        "n_unusable": sum(r.get("status") == "unusable" for r in rows),
    }
    ci: dict[str, list[float]] = {}
    for spec in M.METRICS.values():
        values = np.array([r[spec.column] for r in rows if spec.column in r], dtype=np.float64)
        if values.size:
            out[spec.key] = spec.value(values)
            ci[spec.key] = list(spec.interval(values, seed))
            out[f"n_{spec.task}"] = int(values.size)
    times = [r["time_s"] for r in rows if r.get("time_s") is not None and r.get("status") == "ok"]
    if times:
        out["time_per_sample_s"] = float(np.median(times))
    out["ci95"] = ci
    return out


def aggregate(rows: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Pooled summary plus the same keys per category."""
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_category[r["category"]].append(r)
    result = summarize(rows, seed=seed)
    result["per_category"] = {c: summarize(by_category[c], seed=seed) for c in sorted(by_category)}
    result["averaging"] = AVERAGING
    return result


def score(samples: Sequence[Sample], predictions: dict[str, Prediction], tasks: Iterable[str],
          seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-sample rows and their aggregate for ``samples`` (predictions matched by id)."""
    tasks = set(tasks)
    rows = [score_sample(s, predictions.get(s.id), tasks) for s in samples]
    return rows, aggregate(rows, seed=seed)
