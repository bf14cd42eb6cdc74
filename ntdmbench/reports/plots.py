"""The report's figures (PNG, matplotlib's Agg backend, so no display is needed), from result files.

- accuracy vs occlusion level: one panel per metric, a line per model over L0-L3;
- error CDF: the share of samples below each rotation error, a panel per condition, a line per model;
- time vs accuracy: each model's median in-loop time per image against its Acc@pi/6.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ntdmbench.benchmark.store import read_jsonl
from ntdmbench.benchmark.metrics import METRICS
from ntdmbench.reports.tables import TableData

LEVELS = ("L0", "L1", "L2", "L3")


def _grid(n: int, width: float = 4.0, height: float = 3.2):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def colours(table: TableData) -> dict[str, str]:
    """One colour per row, fixed by the table's row order, so every panel and figure of a table agrees."""
    return {row.label: f"C{i % 10}" for i, row in enumerate(table.rows)}


def _legend(axes) -> bool:
    """Every model drawn in any panel, in the first panel's legend; False when nothing was drawn."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        axes[0].legend(list(handles.values()), list(handles), fontsize=7)
    return bool(handles)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_vs_occlusion(table: TableData, path: Path) -> Path | None:
    """Needs at least two of the levels L0-L3 as conditions."""
    levels = [c for c in LEVELS if c in table.conditions]
    if len(levels) < 2:
        return None
    fig, axes = _grid(len(table.metrics))
    colour = colours(table)
    for ax, metric in zip(axes, table.metrics):
        for row in table.rows:
            ys = [table.cell(row, metric, c) for c in levels]
            if any(isinstance(y, float) for y in ys):
                ax.plot(levels, [y if isinstance(y, float) else np.nan for y in ys], marker="o", label=row.label,
                        color=colour[row.label])
        ax.set_title(METRICS[metric].label, fontsize=10)
        ax.set_xlabel("occlusion level")
        ax.grid(alpha=0.3)
    if not _legend(axes):
        plt.close(fig)
        return None
    fig.suptitle(f"{table.id}: accuracy vs occlusion level")
    return _save(fig, path)


def _errors(samples: Path) -> np.ndarray:
    return np.array([r["rot_err_deg"] for r in read_jsonl(samples) if "rot_err_deg" in r], dtype=np.float64)


def error_cdf(table: TableData, path: Path) -> Path | None:
    """Rotation error CDF per condition; vertical lines at the pi/18 and pi/6 thresholds."""
    panels = [c for c in table.conditions if any(c in r.samples for r in table.rows)]
    curves = {c: [(r.label, e) for r in table.rows if c in r.samples and (e := _errors(r.samples[c])).size]
              for c in panels}
    panels = [c for c in panels if curves[c]]
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    colour = colours(table)
    for ax, cond in zip(axes, panels):
        for label, errors in curves[cond]:
            xs = np.sort(errors)
            ax.step(np.concatenate([[0.0], xs, [180.0]]), np.concatenate([np.arange(xs.size + 1) / xs.size, [1.0]]),
                    where="post", label=label, lw=1.5, color=colour[label])
        for threshold in (10, 30):
            ax.axvline(threshold, color="grey", lw=0.8, ls="--")
        ax.set_xlim(0, 180)
        ax.set_ylim(-0.02, 1.03)
        ax.set_title(cond, fontsize=10)
        ax.set_xlabel("rotation error (deg)")
        ax.set_ylabel("fraction of samples")
        ax.grid(alpha=0.3)
    _legend(axes)
    fig.suptitle(f"{table.id}: rotation error CDF")
    return _save(fig, path)


def time_vs_accuracy(table: TableData, path: Path) -> Path | None:
    """On the clean condition (else the first): median in-loop seconds per image vs Acc@pi/6."""
    cond = table.clean or table.conditions[0]
    points = []
    for row in table.rows:
        m = row.metrics.get(cond, {})
        if m.get("time_per_sample_s") and m.get("acc_pi6") is not None:
            points.append((row.label, m["time_per_sample_s"], m["acc_pi6"]))
    if not points:
        return None
    fig, (ax,) = _grid(1, 5.0, 3.8)
    colour = colours(table)
    for label, t, acc in points:
        ax.scatter([t], [acc], s=30, color=colour[label])
        ax.annotate(label, (t, acc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("median time per image (s, in the run loop)")
    ax.set_ylabel(f"{METRICS['acc_pi6'].label} on {cond}")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"{table.id}: time vs accuracy", fontsize=10)
    return _save(fig, path)


def all_plots(table: TableData, folder: Path) -> list[Path]:
    made = [accuracy_vs_occlusion(table, folder / f"{table.id}_accuracy_vs_occlusion.png"),
            error_cdf(table, folder / f"{table.id}_error_cdf.png"),
            time_vs_accuracy(table, folder / f"{table.id}_time_vs_accuracy.png")]
    return [p for p in made if p is not None]
