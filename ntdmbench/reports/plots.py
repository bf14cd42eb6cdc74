"""The report's figures, from result files: a PNG for the report and a PDF (vector, for slides and
papers) beside it, drawn with matplotlib's Agg backend so no display is needed.

- accuracy vs occlusion level: one panel per metric, a line per model over the levels, 95 % interval bars;
- error CDF: the share of samples below each rotation error, a panel per condition, a line per model
  with its 95 % band (Dvoretzky-Kiefer-Wolfowitz), the pi/18 and pi/6 thresholds labelled;
- time vs accuracy: each model's median in-loop time per image against its Acc@pi/6 with its interval.

Every model keeps one colour, marker and line style in every panel of a table, and markers are hollow
and shrink row by row, so curves that coincide (two random seeds at 0 %) stay visible.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ntdmbench.benchmark.metrics import METRICS
from ntdmbench.benchmark.store import read_jsonl
from ntdmbench.reports.tables import TableData

LEVELS = ("L0", "L1", "L2", "L3")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
LINESTYLES = ("-", "--", "-.", ":")
THRESHOLDS_DEG = ((10.0, "π/18 (10°)"), (30.0, "π/6 (30°)"))


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str
    markersize: float

    def line(self) -> dict[str, Any]:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle, "markersize": self.markersize,
                "markerfacecolor": "none", "markeredgewidth": 1.3}


def styles(table: TableData) -> dict[str, Style]:
    """One style per row, fixed by the table's row order, so every panel and figure of a table agrees."""
    return {row.label: Style(f"C{i % 10}", MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)],
                             max(9.0 - 1.2 * i, 3.5))
            for i, row in enumerate(table.rows)}


def _grid(n: int, width: float = 4.2, height: float = 3.4):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _legend(axes) -> bool:
    """Every model drawn in any panel, in the first panel's legend; False when nothing was drawn."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_"):
                handles.setdefault(label, handle)
    if handles:
        axes[0].legend(list(handles.values()), list(handles), fontsize=7, framealpha=0.85)
    return bool(handles)


def _title(fig, text: str, what: str) -> None:
    """The table's name (wrapped to the figure's width) over what the figure shows."""
    width = int(fig.get_figwidth() * 13)
    fig.suptitle(textwrap.fill(text, width) + "\n" + what, fontsize=10)


def _save(fig, path: Path) -> Path:
    """``path`` (PNG) and the same figure as a PDF beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path


def accuracy_vs_occlusion(table: TableData, path: Path) -> Path | None:
    """Needs at least two of the levels L0-L3 as conditions."""
    levels = [c for c in LEVELS if c in table.conditions]
    if len(levels) < 2:
        return None
    fig, axes = _grid(len(table.metrics))
    style = styles(table)
    xs = np.arange(len(levels))
    for ax, metric in zip(axes, table.metrics):
        for row in table.rows:
            stats = [table.stat(row, metric, c) for c in levels]
            if not any(stats):
                continue
            ys = np.array([s.value if s else np.nan for s in stats])
            err = np.array([[s.value - s.ci_low, s.ci_high - s.value] if s and s.ci_low is not None
                            and np.isfinite([s.ci_low, s.ci_high]).all() else [np.nan, np.nan] for s in stats]).T
            ax.errorbar(xs, ys, yerr=err, label=row.label, capsize=3, elinewidth=0.8, **style[row.label].line())
        ax.set_xticks(xs, [table.label(c) for c in levels])
        ax.set_title(METRICS[metric].label, fontsize=10)
        ax.set_xlabel("occlusion level (w/o = none; L1-L3 = 20-40, 40-60, 60-80 % occluded)", fontsize=7)
        ax.set_ylabel(METRICS[metric].label)
        ax.grid(alpha=0.3)
    if not _legend(axes):
        plt.close(fig)
        return None
    _title(fig, table.title, "accuracy vs occlusion level (bars: 95 % intervals)")
    return _save(fig, path)


def _errors(samples: Path) -> np.ndarray:
    return np.array([r["rot_err_deg"] for r in read_jsonl(samples) if "rot_err_deg" in r], dtype=np.float64)


def dkw_epsilon(n: int, confidence: float = 0.95) -> float:
    """Half-width of the Dvoretzky-Kiefer-Wolfowitz band around an empirical CDF of ``n`` samples."""
    return math.sqrt(math.log(2 / (1 - confidence)) / (2 * n))


def error_cdf(table: TableData, path: Path) -> Path | None:
    """Rotation error CDF per condition, with its 95 % band and the labelled pi/18 and pi/6 thresholds."""
    panels = [c for c in table.conditions if any(c in r.samples for r in table.rows)]
    curves = {c: [(r.label, e) for r in table.rows if c in r.samples and (e := _errors(r.samples[c])).size]
              for c in panels}
    panels = [c for c in panels if curves[c]]
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    style = styles(table)
    for ax, cond in zip(axes, panels):
        for label, errors in curves[cond]:
            xs = np.concatenate([[0.0], np.sort(errors), [180.0]])
            ys = np.concatenate([np.arange(errors.size + 1) / errors.size, [1.0]])
            s = style[label]
            ax.step(xs, ys, where="post", label=label, lw=1.5, color=s.color, linestyle=s.linestyle)
            eps = dkw_epsilon(errors.size)
            ax.fill_between(xs, np.clip(ys - eps, 0, 1), np.clip(ys + eps, 0, 1), step="post", color=s.color,
                            alpha=0.12, linewidth=0)
        for threshold, name in THRESHOLDS_DEG:
            ax.axvline(threshold, color="grey", lw=0.8, ls="--")
            ax.text(threshold + 2, 0.04, name, fontsize=7, color="dimgrey", rotation=90, va="bottom")
        ax.set_xlim(0, 180)
        ax.set_ylim(-0.02, 1.03)
        ax.set_title(table.label(cond), fontsize=10)
        ax.set_xlabel("rotation error (°)")
        ax.set_ylabel("share of samples below")
        ax.grid(alpha=0.3)
    _legend(axes)
    _title(fig, table.title, "rotation error CDF (bands: 95 % DKW)")
    return _save(fig, path)


def time_vs_accuracy(table: TableData, path: Path) -> Path | None:
    """On the clean condition (else the first): median in-loop seconds per image vs Acc@pi/6."""
    cond = table.clean or table.conditions[0]
    points = []
    for row in table.rows:
        stat = table.stat(row, "acc_pi6", cond)
        seconds = row.metrics.get(cond, {}).get("time_per_sample_s")
        if stat and seconds:
            points.append((row.label, seconds, stat))
    if not points:
        return None
    fig, (ax,) = _grid(1, 5.4, 4.0)
    style = styles(table)
    for label, seconds, stat in points:
        err = None
        if stat.ci_low is not None and np.isfinite([stat.ci_low, stat.ci_high]).all():
            err = [[stat.value - stat.ci_low], [stat.ci_high - stat.value]]
        ax.errorbar([seconds], [stat.value], yerr=err, capsize=3, label=label,
                    **{**style[label].line(), "linestyle": "none"})
        ax.annotate(label, (seconds, stat.value), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("median time per image (s, in the run loop; log scale)")
    ax.set_ylabel(f"{METRICS['acc_pi6'].label} on {table.label(cond)}")
    ax.grid(alpha=0.3, which="both")
    _legend([ax])
    _title(fig, table.title, "time vs accuracy (bars: 95 % intervals)")
    return _save(fig, path)


def all_plots(table: TableData, folder: Path) -> list[Path]:
    """The PNGs written (each with its PDF)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", table.id)
    made = [accuracy_vs_occlusion(table, folder / f"{stem}_accuracy_vs_occlusion.png"),
            error_cdf(table, folder / f"{stem}_error_cdf.png"),
            time_vs_accuracy(table, folder / f"{stem}_time_vs_accuracy.png")]
    return [p for p in made if p is not None]
