"""``ntdmbench compare A B``: is model A better than model B, and by how much, on the same samples?

A and B are two run directories (each with ``samples.jsonl``), or with ``--suite DIR`` two rows of a
suite run, compared on every condition both have results for. For each metric both runs report, a
paired bootstrap resamples the ids they share (``metrics.paired_bootstrap``: the same resample for
both) and gives the difference A - B in the metric's unit (points for percentages, degrees for the
median error), its 95 % interval and a two-sided p-value. Printed as markdown; ``--json`` writes the
same numbers. Built from result files only.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ntdmbench.benchmark.metrics import METRICS, MetricSpec, paired_bootstrap
from ntdmbench.benchmark.store import read_jsonl
from ntdmbench.errors import InputError, MissingFileError


@dataclass
class Side:
    """One side of a comparison: a name and its per-sample rows by id."""

    name: str
    dataset: str
    source: str
    rows: dict[str, dict[str, Any]]


@dataclass
class Comparison:
    condition: str
    metric: str
    a: float
    b: float
    difference: float
    ci95: tuple[float, float]
    p_value: float
    n: int


def _statistic(spec: MetricSpec) -> Callable[..., np.ndarray]:
    """The metric's own value function over the last axis of a batch of resamples."""
    def statistic(values: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.apply_along_axis(spec.value, axis, values)

    return statistic


def compare_rows(a: Side, b: Side, condition: str, metrics: list[str], n_resamples: int, seed: int) -> list[Comparison]:
    """Every metric both sides report, on the ids they share."""
    shared = sorted(a.rows.keys() & b.rows.keys())
    out = []
    for key in metrics:
        spec = METRICS[key]
        ids = [i for i in shared if spec.column in a.rows[i] and spec.column in b.rows[i]]
        if len(ids) < 2:
            continue
        va = np.array([a.rows[i][spec.column] for i in ids], dtype=np.float64)
        vb = np.array([b.rows[i][spec.column] for i in ids], dtype=np.float64)
        res = paired_bootstrap(va, vb, _statistic(spec), n_resamples=n_resamples, seed=seed)
        out.append(Comparison(condition, key, spec.value(va), spec.value(vb), res.difference, (res.ci_low, res.ci_high),
                              res.p_value, res.n))
    return out


def _run_side(path: Path) -> Side:
    samples = path / "samples.jsonl"
    if not samples.is_file():
        raise MissingFileError(f"{path}: no samples.jsonl (give a run directory, or rows of a suite with --suite)")
    metrics = path / "metrics.json"
    meta = json.loads(metrics.read_text()) if metrics.is_file() else {}
    return Side(meta.get("model", path.name), meta.get("dataset", "?"), str(path),
                {r["id"]: r for r in read_jsonl(samples)})


def _suite_pairs(suite_dir: Path, row_a: str, row_b: str) -> list[tuple[str, Side, Side]]:
    """(table/condition, A, B) for every condition where both rows have results."""
    from ntdmbench.benchmark.suites.index import SuiteIndex

    index = SuiteIndex.read(suite_dir)
    pairs = []
    for table in index.ordered_tables():
        rows = {r.id: r for r in table.rows}
        if row_a not in rows or row_b not in rows:
            continue
        for cond in table.conditions:
            ra, rb = rows[row_a].results.get(cond), rows[row_b].results.get(cond)
            if ra is None or rb is None:
                continue
            sides = [Side(rows[r].label, table.datasets.get(cond, cond), res.run_dir or str(suite_dir / res.samples),
                          {s["id"]: s for s in read_jsonl(suite_dir / res.samples)})
                     for r, res in ((row_a, ra), (row_b, rb))]
            pairs.append((f"{table.id}/{cond}", *sides))
    if not pairs:
        known = sorted({r.id for t in index.tables.values() for r in t.rows})
        raise InputError(f"{suite_dir}: rows {row_a!r} and {row_b!r} share no result (rows: {', '.join(known)})")
    return pairs


def to_markdown(a_name: str, b_name: str, results: list[Comparison], n_resamples: int) -> str:
    lines = [f"### A = {a_name}, B = {b_name}", "",
             "| condition | metric | A | B | A − B | 95 % CI | p | n |", "|:---|:---|---:|---:|---:|:---:|---:|---:|"]
    floor = 2 / n_resamples
    for c in results:
        p = f"< {floor:.4f}" if c.p_value < floor else f"{c.p_value:.4f}"
        lines.append(f"| {c.condition} | {METRICS[c.metric].label} | {c.a:.1f} | {c.b:.1f} | {c.difference:+.1f} | "
                     f"[{c.ci95[0]:+.1f}, {c.ci95[1]:+.1f}] | {p} | {c.n} |")
    lines += ["", f"<sub>paired bootstrap over the shared ids ({n_resamples} resamples); A − B in the metric's unit "
                  "(points, degrees for the median error); p two-sided</sub>"]
    return "\n".join(lines) + "\n"


def _cmd_compare(args: argparse.Namespace) -> int:
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else list(METRICS)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"--metrics {', '.join(unknown)} (choose from {', '.join(METRICS)})")
    if args.suite:
        pairs = _suite_pairs(Path(args.suite), args.a, args.b)
    else:
        a, b = _run_side(Path(args.a)), _run_side(Path(args.b))
        pairs = [(a.dataset if a.dataset == b.dataset else f"{a.dataset} / {b.dataset}", a, b)]
    results = [c for cond, a, b in pairs for c in compare_rows(a, b, cond, metrics, args.resamples, args.seed)]
    a_name, b_name = pairs[0][1].name, pairs[0][2].name
    print(to_markdown(a_name, b_name, results, args.resamples), end="")
    if args.json:
        doc = {"a": {"name": a_name, "sources": [p[1].source for p in pairs]},
               "b": {"name": b_name, "sources": [p[2].source for p in pairs]},
               "method": "paired bootstrap on shared ids", "n_resamples": args.resamples, "seed": args.seed,
               "comparisons": [asdict(c) for c in results]}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"written: {args.json}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="paired bootstrap of two runs (or two rows of a suite) on shared ids",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("a", help="run directory A (runs/MODEL/DATASET/KEY), or a row id with --suite")
    p.add_argument("b", help="run directory B, or a row id with --suite")
    p.add_argument("--suite", help="a suite run directory (runs/suites/NAME): A and B are its row ids")
    p.add_argument("--metrics", help="comma-separated metric keys (default: every metric both report)")
    p.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--json", help="also write the comparison as JSON to this file")
    p.set_defaults(func=_cmd_compare)
