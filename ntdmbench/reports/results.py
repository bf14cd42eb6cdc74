"""``results.json``: one machine-readable file per suite run, after lm-evaluation-harness's results JSON.

It holds what a reader needs to trust or reuse a number without opening the run folders: the resolved
suite (``config``, as ``suite.yaml``), versions, commit and device (``provenance``), each metric's
direction and unit, and per table, model, condition (and the pooled ``mean``) and metric: the value,
``n``, ``n_failed``, the 95 % interval and the run directory the value came from. Built from
``index.json`` and the result files only, like every report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from ntdmbench.benchmark.metrics import METRICS
from ntdmbench.benchmark.suites.index import SuiteIndex
from ntdmbench.reports.tables import MEAN, TableData

SCHEMA = "ntdmbench-results/1"


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: an interval that cannot be computed (fewer than two samples) is null."""
    return value if value is not None and math.isfinite(value) else None


def _cells(table: TableData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in table.rows:
        conditions: dict[str, Any] = {}
        for cond in list(table.conditions) + ([MEAN] if table.mean else []):
            values = {}
            for metric in METRICS:
                stat = table.stat(row, metric, cond)
                if stat is not None:
                    values[metric] = {"value": stat.value, "n": stat.n, "n_failed": stat.n_failed,
                                      "ci95": [_finite(stat.ci_low), _finite(stat.ci_high)]}
            if values:
                run_dir = [row.run_dirs.get(c) for c in table.mean or []] if cond == MEAN else row.run_dirs.get(cond)
                conditions[cond] = {"run_dir": run_dir, "metrics": values}
        out[row.id] = {"label": row.label, "status": row.status,
                       "capabilities": sorted(row.capabilities) if row.capabilities is not None else None,
                       "conditions": conditions}
    return out


def build(run_dir: str | Path, data: list[TableData]) -> dict[str, Any]:
    """The results document of the suite run in ``run_dir`` whose tables are ``data``."""
    run_dir = Path(run_dir)
    index = SuiteIndex.read(run_dir)
    suite_yaml = run_dir / "suite.yaml"
    prov = index.provenance
    return {
        "schema": SCHEMA,
        "suite": index.suite,
        "title": index.title,
        "limit": index.limit,
        "started": index.started,
        "finished": index.finished,
        "config": yaml.safe_load(suite_yaml.read_text()) if suite_yaml.is_file() else None,
        "provenance": {"git": prov.get("git", {}), "versions": prov.get("versions", {}),
                       "device": prov.get("device", {}), "world_size": index.world_size, "seed": prov.get("seed"),
                       "root": index.root},
        "metrics": {m.key: {"label": m.label, "unit": m.unit, "higher_is_better": m.higher_is_better,
                            "description": m.description} for m in METRICS.values()},
        "tables": {t.id: {"title": t.title, "benchmark": t.benchmark, "conditions": t.conditions, "clean": t.clean,
                          "mean": t.mean, "categories": t.categories, "results": _cells(t)} for t in data},
        "failures": [vars(f) for f in index.failures],
    }
