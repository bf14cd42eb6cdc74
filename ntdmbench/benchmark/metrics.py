"""The paper's metrics, with every convention written down once.

- Rotation: ``R(a, e, theta) = Rz(theta) Rx(-(pi/2 - e)) Rz(-a)`` on radians (PASCAL3D+, NeMo, StarMap),
  from ``models/rotation.py``, the one definition the camera and the scorer share.
- Rotation error: the geodesic angle of ``R_pred^T R_gt`` in radians; equal to
  ``||logm(R_pred^T R_gt)||_F / sqrt(2)`` but finite at 180 degrees.
- A missing, NaN or failed prediction scores error pi, IoU 0 and a wrong class.
- Accuracies are strict (``err < pi/6``, ``err < pi/18``) and reported in percent, as the paper
  prints them; the median error is in degrees; per-object IoU is in [0, 1] (1 when both masks are
  empty) and its mean is reported in percent by the scorer.
- Aggregates are pooled over samples unless a function says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

from ntdmbench.models.rotation import array_module, rotation_matrix

PI_6 = math.pi / 6
PI_18 = math.pi / 18


def rotation_error(R_pred, R_gt):
    """Geodesic angle in radians between rotations, shape ``(...)`` for ``(..., 3, 3)`` inputs.

    ``atan2(sin, cos)`` of the relative rotation is accurate near 0 and exactly pi at 180 degrees,
    where the ``logm`` form goes complex and the ``arccos`` form loses precision.
    """
    xp = array_module(R_pred)
    M = xp.swapaxes(R_pred, -1, -2) @ R_gt if xp is np else R_pred.transpose(-1, -2) @ R_gt
    cos = (M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0) / 2.0
    skew = [M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]]
    sin = xp.sqrt(skew[0] ** 2 + skew[1] ** 2 + skew[2] ** 2) / 2.0
    return xp.arctan2(sin, cos) if xp is np else xp.atan2(sin, cos)


def pose_error(pred_angles, gt_angles) -> np.ndarray:
    """Rotation error in radians from ``(..., 3)`` (azimuth, elevation, theta) arrays; NaN -> pi."""
    pred = np.asarray(pred_angles, dtype=np.float64)
    gt = np.asarray(gt_angles, dtype=np.float64)
    err = rotation_error(rotation_matrix(*np.moveaxis(pred, -1, 0)), rotation_matrix(*np.moveaxis(gt, -1, 0)))
    return _missing_as_pi(err)


def _missing_as_pi(errors) -> np.ndarray:
    err = np.asarray(errors, dtype=np.float64)
    return np.where(np.isfinite(err), err, math.pi)


def pose_accuracy(errors, threshold: float) -> float:
    """Percent of errors strictly below ``threshold`` (radians); NaN or inf errors count as pi."""
    err = _missing_as_pi(errors)
    if err.size == 0:
        return math.nan
    return float(100.0 * np.mean(err < threshold))


def median_error_deg(errors) -> float:
    """Pooled median of the errors (radians in), in degrees; NaN or inf errors count as pi."""
    err = _missing_as_pi(errors)
    if err.size == 0:
        return math.nan
    return float(np.degrees(np.median(err)))


def amodal_iou(pred_mask, gt_mask):
    """``|A & B| / |A | B|`` over the last two axes, 1.0 when both are empty.

    Float masks are binarised at 0.5 (the Bayesian-Amodal protocol); a ``None`` prediction scores 0.
    """
    gt = np.asarray(gt_mask) > 0.5 if np.asarray(gt_mask).dtype != bool else np.asarray(gt_mask)
    if pred_mask is None:
        return 0.0 if gt.ndim == 2 else np.zeros(gt.shape[:-2])
    pred = np.asarray(pred_mask)
    pred = pred if pred.dtype == bool else pred > 0.5
    if pred.shape[-2:] != gt.shape[-2:]:
        raise ValueError(f"mask shapes differ: prediction {pred.shape[-2:]} vs ground truth {gt.shape[-2:]}")
    inter = np.logical_and(pred, gt).sum(axis=(-2, -1))
    union = np.logical_or(pred, gt).sum(axis=(-2, -1))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(iou) if iou.ndim == 0 else iou


def top1(pred: Sequence[str | None], gt: Sequence[str]) -> float:
    """Percent of predicted labels equal to the ground truth; ``None`` is wrong."""
    if len(pred) != len(gt):
        raise ValueError(f"top1: {len(pred)} predictions for {len(gt)} labels")
    if len(gt) == 0:
        return math.nan
    return float(100.0 * np.mean([p is not None and p == g for p, g in zip(pred, gt)]))


# --- intervals --------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion, in percent."""
    if n == 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(100.0 * ci.low), float(100.0 * ci.high))


def bootstrap_interval(
    values, statistic: Callable[..., Any] = np.median, n_resamples: int = 2000, seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of ``statistic`` (which must take ``axis``)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return (math.nan, math.nan)
    res = stats.bootstrap(
        (values,), statistic, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed), vectorized=True, batch=200,
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def median_error_interval(errors, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Seeded bootstrap interval of the median error, in degrees."""
    lo, hi = bootstrap_interval(_missing_as_pi(errors), np.median, n_resamples, seed)
    return (math.degrees(lo), math.degrees(hi))


@dataclass(frozen=True)
class PairedComparison:
    """``statistic(a) - statistic(b)`` on the same ids, with a paired-bootstrap interval and p-value."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int


def paired_bootstrap(
    a, b, statistic: Callable[..., Any] = np.mean, n_resamples: int = 5000, seed: int = 0,
    confidence: float = 0.95,
) -> PairedComparison:
    """Compare two models on the same samples: resample sample indices once for both.

    ``a`` and ``b`` are per-sample values aligned by id (e.g. 0/1 correctness or errors). The
    two-sided p-value is the bootstrap estimate of P(difference has the other sign).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap needs aligned values, got {a.shape} and {b.shape}")

    def diff(x, y, axis=-1):
        return statistic(x, axis=axis) - statistic(y, axis=axis)

    observed = float(diff(a, b))
    res = stats.bootstrap(
        (a, b), diff, paired=True, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed), vectorized=True, batch=200,
    )
    dist = res.bootstrap_distribution
    p = min(1.0, 2.0 * min(np.mean(dist <= 0), np.mean(dist >= 0)))
    return PairedComparison(observed, float(res.confidence_interval.low), float(res.confidence_interval.high), float(p), a.size)


# --- metric catalog ---------------------------------------------------------------------------


def _accuracy_below(threshold: float) -> tuple[Callable[[np.ndarray], float], Callable[[np.ndarray, int], tuple[float, float]]]:
    def value(errors: np.ndarray) -> float:
        return pose_accuracy(errors, threshold)

    def interval(errors: np.ndarray, seed: int) -> tuple[float, float]:
        return wilson_interval(int(np.sum(errors < threshold)), errors.size)

    return value, interval


def _percent_mean(values: np.ndarray) -> float:
    return float(100.0 * values.mean())


def _percent_mean_interval(values: np.ndarray, seed: int) -> tuple[float, float]:
    low, high = bootstrap_interval(values, np.mean, seed=seed)
    return (100.0 * low, 100.0 * high)


def _share_interval(correct: np.ndarray, seed: int) -> tuple[float, float]:
    return wilson_interval(int(np.sum(correct)), correct.size)


def _median_interval(errors: np.ndarray, seed: int) -> tuple[float, float]:
    return median_error_interval(errors, seed=seed)


@dataclass(frozen=True)
class MetricSpec:
    """Everything the harness knows about a metric, in one place: the scorer, the tables, the CSV and the
    CLI summary loop over ``METRICS``, so a new metric is one entry.

    ``column`` is the per-sample field of ``samples.jsonl`` it pools; ``value`` and ``interval`` (95 %,
    seeded) take those per-sample values as an array.
    """

    key: str
    task: str  # the predictor capability it needs: pose / class / amodal
    column: str
    label: str  # markdown and HTML header
    latex: str  # LaTeX header
    unit: str
    higher_is_better: bool
    description: str
    value: Callable[[np.ndarray], float]
    interval: Callable[[np.ndarray, int], tuple[float, float]]
    latex_short: str = ""  # LaTeX header where a column holds one metric (the paper's Table 3); default: latex

    @property
    def latex_column(self) -> str:
        return self.latex_short or self.latex


METRICS: dict[str, MetricSpec] = {
    m.key: m
    for m in (
        MetricSpec("acc_pi6", "pose", "rot_err", "Acc@π/6 (%) ↑", r"Pose ACC $\frac{\pi}{6}$ $\uparrow$", "%", True,
                   "rotation error < pi/6 (strict), pooled", *_accuracy_below(PI_6),
                   latex_short=r"Pose $\frac{\pi}{6}$ $\uparrow$"),
        MetricSpec("acc_pi18", "pose", "rot_err", "Acc@π/18 (%) ↑", r"Pose ACC $\frac{\pi}{18}$ $\uparrow$", "%", True,
                   "rotation error < pi/18 (strict), pooled", *_accuracy_below(PI_18),
                   latex_short=r"Pose $\frac{\pi}{18}$ $\uparrow$"),
        MetricSpec("median_err_deg", "pose", "rot_err", "Median error (°) ↓", r"Median error ($^\circ$) $\downarrow$",
                   "deg", False, "pooled median rotation error", median_error_deg, _median_interval,
                   latex_short=r"Med. err. ($^\circ$) $\downarrow$"),
        MetricSpec("amodal_iou", "amodal", "amodal_iou", "Amodal IoU (%) ↑", r"Amodal Segm IoU $\uparrow$", "%", True,
                   "mean per-object amodal mask IoU", _percent_mean, _percent_mean_interval,
                   latex_short=r"Seg IoU $\uparrow$"),
        MetricSpec("top1", "class", "class_correct", "Top-1 (%) ↑", r"Classification ACC (\%) $\uparrow$", "%", True,
                   "top-1 classification accuracy", _percent_mean, _share_interval,
                   latex_short=r"Class ACC $\uparrow$"),
    )
}
