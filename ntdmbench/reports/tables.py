"""The paper's tables from a suite run's result files, never by hand (``ntdmbench table RUN_DIR``).

Formats: markdown (a block per metric), LaTeX (booktabs, as the paper: best **bold**, second
underlined; ``wide`` = one row per model with a column group per metric, ``stacked`` = a block per
metric), CSV (the canonical long form ``model,benchmark,condition,metric,value``) and HTML.

Cells: a number (percent, or degrees for the median error); ``×`` where the model lacks the capability
a metric needs (from the tasks its results declare); ``–`` where there is no result (the model failed
or was not run). ``mean`` is pooled over the samples of the table's ``mean`` conditions; the drop
column ``Δ`` is the pooled value over the shifted conditions (the ``mean`` list, else every
condition but the clean one) minus the clean value, in points.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ntdmbench.benchmark.metrics import METRICS
from ntdmbench.benchmark.scoring import summarize
from ntdmbench.benchmark.store import read_jsonl
from ntdmbench.benchmark.suites.index import SuiteIndex

MEAN, DROP = "mean", "drop"
NA, MISSING = "×", "–"


@dataclass
class RowData:
    id: str
    label: str
    status: str
    capabilities: set[str] | None  # None: unknown (the model could not be built)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # condition -> metrics.json
    samples: dict[str, Path] = field(default_factory=dict)  # condition -> samples.jsonl
    _pooled: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict, repr=False)

    def pooled(self, conditions: list[str]) -> dict[str, Any]:
        """Metrics pooled over the per-sample rows of several conditions (each must have results)."""
        if not conditions or any(c not in self.samples for c in conditions):
            return {}
        key = tuple(conditions)
        if key not in self._pooled:
            self._pooled[key] = summarize([r for c in conditions for r in read_jsonl(self.samples[c])])
        return self._pooled[key]


@dataclass
class TableData:
    id: str
    title: str
    benchmark: str
    conditions: list[str]
    metrics: list[str]
    rows: list[RowData]
    clean: str | None = None
    mean: list[str] | None = None
    layout: str = "wide"
    categories: list[str] | None = None

    def columns(self) -> list[str]:
        """Condition columns of each metric group: conditions, ``mean``, then the drop column."""
        cols = list(self.conditions) + ([MEAN] if self.mean else [])
        if self.clean and len(self.conditions) > 1:
            cols.append(DROP)
        return cols

    def shifted(self) -> list[str]:
        return self.mean or [c for c in self.conditions if c != self.clean]

    def cell(self, row: RowData, metric: str, column: str) -> float | str:
        """A value, ``NA`` (no capability) or ``MISSING`` (no result)."""
        if row.capabilities is not None and METRICS[metric].task not in row.capabilities:
            return NA
        if column == DROP:
            shifted = row.pooled(self.shifted()).get(metric)
            clean = row.metrics.get(self.clean, {}).get(metric)
            return float(shifted - clean) if shifted is not None and clean is not None else MISSING
        if column == MEAN:
            value = row.pooled(self.mean or []).get(metric)
        else:
            value = row.metrics.get(column, {}).get(metric)
        return float(value) if value is not None else MISSING


def load(run_dir: str | Path) -> list[TableData]:
    """The tables of a suite run directory (``index.json`` and the result files it names)."""
    run_dir = Path(run_dir)
    tables = []
    for t in SuiteIndex.read(run_dir).ordered_tables():
        rows = []
        for r in t.rows:
            row = RowData(r.id, r.label, r.status, set(r.capabilities) if r.capabilities is not None else None)
            for cond, res in r.results.items():
                row.metrics[cond] = json.loads((run_dir / res.metrics).read_text())
                row.samples[cond] = run_dir / res.samples
                if row.capabilities is None:
                    row.capabilities = set(row.metrics[cond].get("tasks", []))
            rows.append(row)
        tables.append(TableData(t.id, t.title, t.benchmark, list(t.conditions), t.metrics, rows,
                                t.clean, t.mean, t.layout, t.categories))
    return tables


def ranks(table: TableData, metric: str, column: str) -> dict[str, int]:
    """Row id -> 1 (best) or 2 (second best) for one column; ties share a rank; no ranks for drops."""
    if column == DROP:
        return {}
    values = {r.id: v for r in table.rows if isinstance(v := table.cell(r, metric, column), float)}
    if len(values) < 2:
        return {}
    ordered = sorted(set(values.values()), reverse=METRICS[metric].higher_is_better)
    return {rid: ordered.index(v) + 1 for rid, v in values.items() if ordered.index(v) < 2}


def _number(value: float | str, column: str, minus: str = "−") -> str:
    if isinstance(value, str):
        return value
    if column == DROP:
        return f"{'+' if value >= 0 else minus}{abs(value):.1f}"
    return f"{value:.1f}"


def _column_label(column: str) -> str:
    return "Δ" if column == DROP else column


def notes(table: TableData) -> list[str]:
    """What the reader needs to read the table: marks, averaging, the drop and the sample counts."""
    out = ["best in **bold**, second <ins>underlined</ins>; × = the model lacks this output; – = no result"]
    if table.mean:
        out.append(f"mean = pooled over the samples of {', '.join(table.mean)}")
    if DROP in table.columns():
        out.append(f"Δ = {'mean' if table.mean else 'pooled ' + ', '.join(table.shifted())} minus "
                   f"{table.clean}, in points")
    if table.categories:
        out.append(f"categories: {', '.join(table.categories)}")
    counts = {}
    for row in table.rows:
        for cond, m in row.metrics.items():
            counts.setdefault(cond, m.get("n"))
    if counts:
        out.append("samples per condition: " + ", ".join(f"{c} {counts[c]}" for c in table.conditions if c in counts))
    failed = [f"{r.label} ({r.status})" for r in table.rows if r.status != "ok"]
    if failed:
        out.append("incomplete rows: " + ", ".join(failed))
    return out


# --- markdown -------------------------------------------------------------------------------------


def to_markdown(table: TableData) -> str:
    lines = [f"### {table.title}", ""]
    cols = table.columns()
    if len(table.conditions) == 1:
        blocks = [(None, [(m, table.conditions[0]) for m in table.metrics])]
    else:
        blocks = [(m, [(m, c) for c in cols]) for m in table.metrics]
    for metric, spec in blocks:
        if metric is not None:
            lines += [f"**{METRICS[metric].label}**", ""]
        header = ["Model"] + [METRICS[m].label if metric is None else _column_label(c) for m, c in spec]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * len(spec)) + "|")
        rank_of = {(m, c): ranks(table, m, c) for m, c in spec}
        for row in table.rows:
            cells = []
            for m, c in spec:
                text = _number(table.cell(row, m, c), c)
                rank = rank_of[(m, c)].get(row.id)
                cells.append(f"**{text}**" if rank == 1 else f"<ins>{text}</ins>" if rank == 2 else text)
            lines.append("| " + " | ".join([row.label.replace("|", "\\|")] + cells) + " |")
        lines.append("")
    lines += [f"<sub>{n}</sub>  " for n in notes(table)]
    return "\n".join(lines).rstrip() + "\n"


# --- LaTeX ----------------------------------------------------------------------------------------

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
_GREEK = {"α": r"\alpha", "β": r"\beta", "π": r"\pi"}
_GREEK_SYMBOL = re.compile(r"([αβπ])(?:_([A-Za-z0-9]+))?")  # a Greek letter and its subscript: "α_b"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters; a Greek letter (with a ``_x`` subscript) becomes math: ``$\\alpha_{b}$``."""
    out, pos = [], 0
    for m in _GREEK_SYMBOL.finditer(text):
        out += [_LATEX_SPECIAL.get(ch, ch) for ch in text[pos:m.start()]]
        out.append(f"${_GREEK[m.group(1)]}" + (f"_{{{m.group(2)}}}" if m.group(2) else "") + "$")
        pos = m.end()
    out += [_LATEX_SPECIAL.get(ch, ch) for ch in text[pos:]]
    return "".join(out)


def _latex_cell(table: TableData, row: RowData, metric: str, column: str, rank_of: dict) -> str:
    value = table.cell(row, metric, column)
    if value == NA:
        return r"$\times$"
    if value == MISSING:
        return "--"
    text = _number(value, column, minus="$-$")
    rank = rank_of[(metric, column)].get(row.id)
    return rf"\textbf{{{text}}}" if rank == 1 else rf"\underline{{{text}}}" if rank == 2 else text


def _latex_column(column: str) -> str:
    return r"$\Delta$" if column == DROP else latex_escape(column)


def to_latex(table: TableData) -> str:
    cols = table.columns()
    rank_of = {(m, c): ranks(table, m, c) for m in table.metrics for c in cols}
    lines = [r"% generated by `ntdmbench table` from result files; needs \usepackage{booktabs}",
             r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.title)}}}",
             rf"\label{{tab:{table.id}}}"]
    if len(table.conditions) == 1:
        cond = table.conditions[0]
        lines += [rf"\begin{{tabular}}{{l{'c' * len(table.metrics)}}}", r"\toprule",
                  "Setup & " + " & ".join(METRICS[m].latex for m in table.metrics) + r" \\", r"\midrule"]
        for row in table.rows:
            cells = [_latex_cell(table, row, m, cond, rank_of) for m in table.metrics]
            lines.append(latex_escape(row.label) + " & " + " & ".join(cells) + r" \\")
    elif table.layout == "stacked":
        lines += [rf"\begin{{tabular}}{{l{'c' * len(cols)}}}", r"\toprule"]
        for k, m in enumerate(table.metrics):
            if k:
                lines.append(r"\midrule")
            lines += [METRICS[m].latex + " & " + " & ".join(_latex_column(c) for c in cols) + r" \\", r"\midrule"]
            for row in table.rows:
                lines.append(latex_escape(row.label) + " & "
                             + " & ".join(_latex_cell(table, row, m, c, rank_of) for c in cols) + r" \\")
    else:
        n = len(cols)
        spec = "l" + "".join(f"{'c' * n}" for _ in table.metrics)
        groups = " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{METRICS[m].latex}}}" for m in table.metrics)
        rules = " ".join(rf"\cmidrule(lr){{{2 + k * n}-{1 + (k + 1) * n}}}" for k in range(len(table.metrics)))
        lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", f" & {groups} \\\\", rules,
                  "Model & " + " & ".join(_latex_column(c) for _ in table.metrics for c in cols) + r" \\",
                  r"\midrule"]
        for row in table.rows:
            cells = [_latex_cell(table, row, m, c, rank_of) for m in table.metrics for c in cols]
            lines.append(latex_escape(row.label) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --- CSV ------------------------------------------------------------------------------------------


def to_csv(tables: list[TableData]) -> str:
    """The canonical long form: one line per (model, benchmark, condition, metric) with a value."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "benchmark", "condition", "metric", "value"])
    for table in tables:
        for row in table.rows:
            for cond in list(table.conditions) + ([MEAN] if table.mean else []):
                for metric in METRICS:
                    value = table.cell(row, metric, cond)
                    if isinstance(value, float):
                        writer.writerow([row.id, table.benchmark, cond, metric, f"{value:.4f}"])
    return buf.getvalue()


# --- HTML -----------------------------------------------------------------------------------------


_STYLE = ("<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0;"
          "border-top:2px solid #000;border-bottom:2px solid #000}th,td{padding:2px 8px;text-align:right}"
          "th:first-child,td:first-child{text-align:left}thead tr:last-child th{border-bottom:1px solid #000}"
          "p.note{font-size:small;color:#444}</style></head><body>")


def to_html(tables: list[TableData], title: str = "ntdmbench tables") -> str:
    parts = ["<!doctype html>", '<html><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
             _STYLE,
             f"<h1>{html.escape(title)}</h1>"]
    for table in tables:
        cols = table.columns() if len(table.conditions) > 1 else [table.conditions[0]]
        parts.append(f"<h2>{html.escape(table.title)}</h2><table><thead><tr><th></th>")
        parts += [f'<th colspan="{len(cols)}">{html.escape(METRICS[m].label)}</th>' for m in table.metrics]
        parts.append("</tr><tr><th>Model</th>")
        parts += [f"<th>{html.escape(_column_label(c))}</th>" for _ in table.metrics for c in cols]
        parts.append("</tr></thead><tbody>")
        rank_of = {(m, c): ranks(table, m, c) for m in table.metrics for c in cols}
        for row in table.rows:
            parts.append(f"<tr><td>{html.escape(row.label)}</td>")
            for m in table.metrics:
                for c in cols:
                    text = html.escape(_number(table.cell(row, m, c), c))
                    rank = rank_of[(m, c)].get(row.id)
                    parts.append(f"<td>{'<b>' + text + '</b>' if rank == 1 else '<u>' + text + '</u>' if rank == 2 else text}</td>")
            parts.append("</tr>")
        parts.append("</tbody></table>")
        parts += [f'<p class="note">{html.escape(n.replace("**bold**", "bold").replace("<ins>underlined</ins>", "underlined"))}</p>'
                  for n in notes(table)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(tables: list[TableData], fmt: str, title: str = "ntdmbench tables") -> str:
    """All ``tables`` in one format: md, latex, csv or html."""
    renderers = {
        "md": lambda: "\n".join(to_markdown(t) for t in tables),
        "latex": lambda: "\n".join(to_latex(t) for t in tables),
        "csv": lambda: to_csv(tables),
        "html": lambda: to_html(tables, title),
    }
    if fmt not in renderers:
        raise ValueError(f"--format {fmt!r} (choose from {', '.join(renderers)})")
    return renderers[fmt]()
