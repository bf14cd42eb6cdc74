"""``report.md`` of a suite run: its tables, figures, failures, timings and provenance, from result files.

Beside it: ``tables/TABLE.{md,tex}`` (markdown with every column, LaTeX in the paper's layout),
``tables.html``, ``results.csv`` (the canonical long form), ``results.json`` (every number with its
n, interval and run directory) and ``plots/*.{png,pdf}``. Rebuilt from ``index.json`` and the copied
result files, so it can be regenerated at any time without a model.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ntdmbench.benchmark.store import write_json
from ntdmbench.benchmark.suites.index import SuiteIndex
from ntdmbench.reports import plots, results, tables


def _settings(index: SuiteIndex) -> list[str]:
    """Each row's arguments, and a warning where two rows of a table ran the same configuration."""
    lines = []
    for t in index.ordered_tables():
        seen: dict[str, str] = {}
        for r in t.rows:
            args = {**r.args, **r.eval_args}
            text = ", ".join(f"{k}={v}" for k, v in sorted(args.items())) or "defaults"
            lines.append(f"| {t.id} | {r.label} | `{r.model}` | {text} |")
            config = json.dumps((r.describe or {}).get("config"), sort_keys=True, default=str)
            if r.describe is not None and config in seen:
                lines.append(f"| {t.id} | ⚠ {r.label} | | same configuration as {seen[config]} |")
            seen.setdefault(config, r.label)
    return ["| table | row | model | arguments |", "|---|---|---|---|", *lines]


def _timings(index: SuiteIndex) -> list[str]:
    t = index.timing_s
    wall = (f"- wall time: data {t.get('data', 0):.0f} s, training {t.get('training', 0):.0f} s, "
            f"prediction and scoring {t.get('prediction', 0):.0f} s, "
            f"total {t.get('total_before_report', 0):.0f} s before this report")
    lines = [wall]
    for key, s in index.training.items():
        state = "failed" if s.error else "cached" if s.cached else f"{s.seconds:.0f} s"
        lines.append(f"- training {key}: {state} (`{s.checkpoint}`)")
    for tab in index.ordered_tables():
        for r in tab.rows:
            wall = sum(res.wall_s for res in r.results.values())
            if r.results:
                lines.append(f"- {tab.id} {r.label}: prediction and scoring {wall:.0f} s over "
                             f"{len(r.results)} condition(s)")
    return lines


TIMING_NOTE = ("Per-image times in the figures are in-loop medians (`samples.jsonl`), not `ntdmbench bench` "
               "timings; the two are never mixed.")


def _header(index: SuiteIndex, data: list[tables.TableData]) -> list[str]:
    """Where and how the run happened, and where its files are."""
    prov = index.provenance
    git, device, versions = prov.get("git", {}), prov.get("device", {}), prov.get("versions", {})
    gpu = f" ({device['gpu']})" if device.get("gpu") else ""
    limit = f"; **LIMITED RUN: only the first {index.limit} samples of each condition**" if index.limit else ""
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    packages = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    tex = ", ".join(f"[{t.id}.tex](tables/{t.id}.tex)" for t in data)
    return [
        (f"Suite `{index.suite}`, started {index.started}, finished {index.finished or '?'}; data root "
         f"`{index.root}`, {index.world_size} worker(s) on `{index.device}`{gpu}{limit}."),
        f"Code {git.get('commit') or 'unknown'}{dirty}; {packages}.",
        "",
        ("Everything below is built from the result files in this folder "
         "(`ntdmbench table THIS_FOLDER --format md|latex|csv|html`). Files: [results.json](results.json) "
         "(every value with n, failures, 95 % interval and run directory), [results.csv](results.csv) "
         f"(the same in long form), [tables.html](tables.html), {tex} (the paper's layout; "
         "`--columns all` adds Δ and every condition)."),
    ]


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    index = SuiteIndex.read(run_dir)
    data = tables.load(run_dir)
    table_dir, plot_dir = run_dir / "tables", run_dir / "plots"
    table_dir.mkdir(exist_ok=True)
    for t in data:
        (table_dir / f"{t.id}.md").write_text(tables.to_markdown(t))
        (table_dir / f"{t.id}.tex").write_text(tables.to_latex(t))
    (run_dir / "tables.html").write_text(tables.to_html(data, index.title))
    (run_dir / "results.csv").write_text(tables.to_csv(data))
    write_json(run_dir / "results.json", results.build(run_dir, data))

    lines = [f"# {index.title}", "", *_header(index, data), ""]
    failures = index.failures
    if failures:
        lines += ["## Missing results", ""]
        lines += [f"- **{f.row}** ({f.stage}{', ' + f.table if f.table else ''}"
                  f"{' ' + f.condition if f.condition else ''}): {f.error}" for f in failures]
        lines.append("")
    for t in data:
        lines += [tables.to_markdown(t).replace("### ", "## ", 1), ""]
        for png in plots.all_plots(t, plot_dir):
            lines += [f"![{png.stem}](plots/{png.name})", ""]
    failed_runs = Counter()
    for t in data:
        for r in t.rows:
            for m in r.metrics.values():
                failed_runs[r.label] += m.get("n_failed", 0)
    if any(failed_runs.values()):
        counts = ", ".join(f"{k} {v}" for k, v in failed_runs.items() if v)
        lines += [f"Samples without a usable prediction (scored as error π, IoU 0, wrong class): {counts}.", ""]
    lines += ["## Settings", "", *_settings(index), "", "## Timing", "", *_timings(index), "", TIMING_NOTE, ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
