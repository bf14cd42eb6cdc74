"""The paper's tables from a suite run's result files, never by hand (``ntdmbench table RUN_DIR``).

Formats: markdown (a block per metric), LaTeX (pasteable into a paper), CSV (the canonical long form
``model,benchmark,condition,metric,value,n,n_failed,ci_low,ci_high,limit``) and HTML.

Columns: by default a table prints the paper's own columns (the suite table's ``columns``: Table 1 has
no clean column for amodal IoU, Table 2 no iid column) with its condition labels (``labels``: L0 is
headed "w/o"); ``full`` adds every condition, the pooled ``mean`` and the drop ``Δ`` (the pooled value
over the shifted conditions, the ``mean`` list else every condition but the clean one, minus the clean
value, in points). LaTeX defaults to the paper's columns, markdown and HTML (read, not pasted) to all.

Marks: the best printed (rounded) value of a column in bold, the second underlined; equal printed
values get the same mark; nothing is marked when all are equal, and the second best is left plain
when it is also the worst (with two values, underlining the last says nothing).

Cells: a number (percent, or degrees for the median error); ``×`` where the model lacks the capability
a metric needs (from the tasks its results declare); ``–`` where there is no result (the model failed
or was not run).

LaTeX fitting: every table is wrapped in ``\\resizebox{<min(natural width, \\linewidth)>}{!}{...}``
(graphicx), so it shrinks to the column (``table``) or text width (``table*``, chosen for tables of
more than ``WIDE_COLUMNS`` value columns) and is never enlarged. One choice for every table: unlike
``tabular*``, which only stretches the inter-column space, it also fits a table whose natural width
is larger than the line.
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
from ntdmbench.errors import InputError

MEAN, DROP = "mean", "drop"
NA, MISSING = "×", "–"
WIDE_COLUMNS = 8  # more value columns than this: a two-column paper's table* (full text width)
LATEX_PACKAGES = ("booktabs", "graphicx")


@dataclass
class Stat:
    """One cell's numbers: the value, its 95 % interval and the sample counts behind it."""

    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    n_failed: int


@dataclass
class RowData:
    id: str
    label: str
    status: str
    capabilities: set[str] | None  # None: unknown (the model could not be built)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # condition -> metrics.json
    samples: dict[str, Path] = field(default_factory=dict)  # condition -> samples.jsonl
    run_dirs: dict[str, str] = field(default_factory=dict)  # condition -> the run directory it came from
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
    paper_columns: dict[str, list[str]] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    limit: int | None = None

    def columns(self, metric: str | None = None, full: bool = True) -> list[str]:
        """A metric's columns: every condition, ``mean`` and the drop (``full``), else the paper's."""
        every = list(self.conditions) + ([MEAN] if self.mean else [])
        if full:
            return every + ([DROP] if self.clean and len(self.conditions) > 1 else [])
        return list((self.paper_columns or {}).get(metric or "", every))

    def shifted(self) -> list[str]:
        return self.mean or [c for c in self.conditions if c != self.clean]

    def label(self, column: str) -> str:
        return "Δ" if column == DROP else self.labels.get(column, column)

    def stat(self, row: RowData, metric: str, column: str) -> Stat | None:
        """A condition's (or the pooled mean's) value with interval and counts; None without one."""
        if row.capabilities is not None and METRICS[metric].task not in row.capabilities:
            return None
        m = row.pooled(self.mean or []) if column == MEAN else row.metrics.get(column, {})
        if m.get(metric) is None:
            return None
        low, high = (m.get("ci95") or {}).get(metric) or (None, None)
        return Stat(float(m[metric]), low, high, int(m.get("n", 0)), int(m.get("n_failed", 0)))

    def cell(self, row: RowData, metric: str, column: str) -> float | str:
        """A value, ``NA`` (no capability) or ``MISSING`` (no result)."""
        if row.capabilities is not None and METRICS[metric].task not in row.capabilities:
            return NA
        if column == DROP:
            shifted = row.pooled(self.shifted()).get(metric)
            clean = row.metrics.get(self.clean, {}).get(metric)
            return float(shifted - clean) if shifted is not None and clean is not None else MISSING
        stat = self.stat(row, metric, column)
        return stat.value if stat else MISSING

    def counts(self, full: bool = True) -> dict[str, int]:
        """Samples per printed condition (the first row with a result says it; every row runs the same ids)."""
        out: dict[str, int] = {}
        for row in self.rows:
            for cond, m in row.metrics.items():
                out.setdefault(cond, m.get("n"))
        shown = set(self.conditions) if len(self.conditions) == 1 else {c for m in self.metrics
                                                                          for c in self.columns(m, full)}
        return {c: out[c] for c in self.conditions if c in out and c in shown}


def load(run_dir: str | Path) -> list[TableData]:
    """The tables of a suite run directory (``index.json`` and the result files it names)."""
    run_dir = Path(run_dir)
    index = SuiteIndex.read(run_dir)
    tables = []
    for t in index.ordered_tables():
        rows = []
        for r in t.rows:
            row = RowData(r.id, r.label, r.status, set(r.capabilities) if r.capabilities is not None else None)
            for cond, res in r.results.items():
                row.metrics[cond] = json.loads((run_dir / res.metrics).read_text())
                row.samples[cond] = run_dir / res.samples
                row.run_dirs[cond] = res.run_dir
                if row.capabilities is None:
                    row.capabilities = set(row.metrics[cond].get("tasks", []))
            rows.append(row)
        tables.append(TableData(t.id, t.title, t.benchmark, list(t.conditions), t.metrics, rows, t.clean, t.mean,
                                t.layout, t.categories, t.columns, dict(t.labels), index.limit))
    return tables


def printed(value: float | str, column: str, minus: str = "−") -> str:
    """A cell as printed: one decimal; the drop carries its sign."""
    if isinstance(value, str):
        return value
    if column == DROP:
        return f"{'+' if value >= 0 else minus}{abs(value):.1f}"
    return f"{value:.1f}"


def ranks(table: TableData, metric: str, column: str) -> dict[str, int]:
    """Row id -> 1 (best) or 2 (second best) for one column, on the printed values (see the module doc)."""
    if column == DROP:
        return {}
    values = {r.id: float(printed(v, column)) for r in table.rows
              if isinstance(v := table.cell(r, metric, column), float)}
    ordered = sorted(set(values.values()), reverse=METRICS[metric].higher_is_better)
    marked = ordered[:2] if len(ordered) > 2 else ordered[:1] if len(ordered) == 2 else []
    return {rid: marked.index(v) + 1 for rid, v in values.items() if v in marked}


def _half_width(stat: Stat | None) -> float | None:
    if stat is None or stat.ci_low is None or stat.ci_high is None:
        return None
    return (stat.ci_high - stat.ci_low) / 2


def notes(table: TableData, full: bool = True) -> list[str]:
    """What the reader needs to read the table: marks, averaging, the drop, the sample counts, the limit."""
    out = ["best in **bold**, second <ins>underlined</ins> (on the printed values; the worst is never underlined); "
           "× = the model lacks this output; – = no result"]
    shown = {c for m in table.metrics for c in table.columns(m, full)}
    if table.mean and MEAN in shown:
        out.append(f"mean = pooled over the samples of {', '.join(table.mean)}")
    if DROP in shown:
        out.append(f"Δ = {'mean' if table.mean else 'pooled ' + ', '.join(table.shifted())} minus "
                   f"{table.label(table.clean or '')}, in points")
    if table.categories:
        out.append(f"categories: {', '.join(table.categories)}")
    counts = table.counts(full)
    if counts:
        out.append("samples per condition: " + ", ".join(f"{table.label(c)} {n}" for c, n in counts.items()))
    if table.limit:
        out.append(f"LIMITED RUN: only the first {table.limit} samples of each condition (--limit)")
    failed = [f"{r.label} ({r.status})" for r in table.rows if r.status != "ok"]
    if failed:
        out.append("incomplete rows: " + ", ".join(failed))
    return out


def _blocks(table: TableData, full: bool) -> list[tuple[str | None, list[tuple[str, str]]]]:
    """(metric or None, its (metric, column) cells): one block with a column per metric when the table
    has a single condition, else a block per metric."""
    if len(table.conditions) == 1:
        return [(None, [(m, table.conditions[0]) for m in table.metrics])]
    return [(m, [(m, c) for c in table.columns(m, full)]) for m in table.metrics]


# --- markdown -------------------------------------------------------------------------------------


def to_markdown(table: TableData, full: bool = True, ci: bool = False) -> str:
    lines = [f"### {table.title}", ""]
    for metric, spec in _blocks(table, full):
        if metric is not None:
            lines += [f"**{METRICS[metric].label}**", ""]
        header = ["Model"] + [METRICS[m].label if metric is None else table.label(c) for m, c in spec]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * len(spec)) + "|")
        rank_of = {(m, c): ranks(table, m, c) for m, c in spec}
        for row in table.rows:
            cells = []
            for m, c in spec:
                text = printed(table.cell(row, m, c), c)
                rank = rank_of[(m, c)].get(row.id)
                text = f"**{text}**" if rank == 1 else f"<ins>{text}</ins>" if rank == 2 else text
                half = _half_width(table.stat(row, m, c)) if ci and c != DROP else None
                cells.append(text + (f" ±{half:.1f}" if half is not None else ""))
            lines.append("| " + " | ".join([row.label.replace("|", "\\|")] + cells) + " |")
        lines.append("")
    if ci:
        lines.append("<sub>± = half the width of the 95 % interval</sub>  ")
    lines += [f"<sub>{n}</sub>  " for n in notes(table, full)]
    return "\n".join(lines).rstrip() + "\n"


# --- LaTeX ----------------------------------------------------------------------------------------

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
_GREEK = {"α": r"\alpha", "β": r"\beta", "π": r"\pi", "Δ": r"\Delta"}
_GREEK_SYMBOL = re.compile(r"([αβπΔ])(?:_([A-Za-z0-9]+))?")  # a Greek letter and its subscript: "α_b"
_TEXT_SYMBOLS = {"×": r"$\times$", "–": "--", "−": "$-$", "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters; a Greek letter (with a ``_x`` subscript) becomes math: ``$\\alpha_{b}$``."""
    out, pos = [], 0
    for m in _GREEK_SYMBOL.finditer(text):
        out += [_TEXT_SYMBOLS.get(ch, _LATEX_SPECIAL.get(ch, ch)) for ch in text[pos:m.start()]]
        out.append(f"${_GREEK[m.group(1)]}" + (f"_{{{m.group(2)}}}" if m.group(2) else "") + "$")
        pos = m.end()
    out += [_TEXT_SYMBOLS.get(ch, _LATEX_SPECIAL.get(ch, ch)) for ch in text[pos:]]
    return "".join(out)


def caption(table: TableData, full: bool = False, ci: bool = False) -> str:
    """The title without a "Table N:" prefix (LaTeX numbers the table), then how to read it."""
    title = re.sub(r"^Table\s+\d+\s*[:.]\s*", "", table.title).strip()
    parts = [latex_escape(title[:1].upper() + title[1:])
             + r". Best in \textbf{bold}, second best \underline{underlined}"]
    cells = [table.cell(r, m, c) for r in table.rows for m in table.metrics for c in table.columns(m, full)]
    if NA in cells:
        parts[0] += r"; $\times$: the model has no such output"
    if MISSING in cells:
        parts[0] += "; --: no result"
    counts = table.counts(full)
    if counts:
        parts.append("Samples per condition: "
                     + ", ".join(f"{latex_escape(table.label(c))} {n}" for c, n in counts.items()))
    if table.categories:
        parts.append(f"Categories: {latex_escape(', '.join(table.categories))}")
    if table.mean and any(MEAN in table.columns(m, full) for m in table.metrics):
        parts.append(f"Mean: pooled over the samples of {latex_escape(', '.join(table.mean))}")
    if ci:
        parts.append(r"$\pm$: half the width of the 95\,\% interval")
    if table.limit:
        parts.append(f"Limited run: only the first {table.limit} samples of each condition")
    return ". ".join(parts) + "."


def _latex_cell(table: TableData, row: RowData, metric: str, column: str, rank: int | None, ci: bool) -> str:
    value = table.cell(row, metric, column)
    if value == NA:
        return r"$\times$"
    if value == MISSING:
        return "--"
    text = printed(value, column, minus="$-$")
    text = rf"\textbf{{{text}}}" if rank == 1 else rf"\underline{{{text}}}" if rank == 2 else text
    half = _half_width(table.stat(row, metric, column)) if ci and column != DROP else None
    return text + (rf"{{\scriptsize$\pm${half:.1f}}}" if half is not None else "")


def _latex_body(table: TableData, full: bool, ci: bool) -> tuple[str, list[str]]:
    """The tabular's column spec and lines, laid out as the paper does for this table's shape."""
    def row_line(row: RowData, spec: list[tuple[str, str]], width: int) -> str:
        cells = [_latex_cell(table, row, m, c, rank_of[(m, c)].get(row.id), ci) for m, c in spec]
        return " & ".join([latex_escape(row.label), *cells, *[""] * (width - len(cells))]) + r" \\"

    blocks = _blocks(table, full)
    rank_of = {(m, c): ranks(table, m, c) for _, spec in blocks for m, c in spec}
    if blocks[0][0] is None:  # one condition: a column per metric (Table 3)
        spec = blocks[0][1]
        lines = [r"\toprule", " & ".join(["Setup", *(METRICS[m].latex_column for m, _ in spec)]) + r" \\", r"\midrule"]
        return "l" + "c" * len(spec), lines + [row_line(r, spec, len(spec)) for r in table.rows]
    if table.layout == "stacked":  # a block per metric, the same columns side by side (Table 2)
        width = max(len(spec) for _, spec in blocks)
        lines = [r"\toprule"]
        for k, (metric, spec) in enumerate(blocks):
            lines += [r"\midrule"] if k else []
            lines += [rf" & \multicolumn{{{len(spec)}}}{{c}}{{{METRICS[metric].latex}}} \\",
                      rf"\cmidrule(lr){{2-{1 + len(spec)}}}",
                      " & ".join(["Model", *(latex_escape(table.label(c)) for _, c in spec)]) + r" \\", r"\midrule"]
            lines += [row_line(r, spec, width) for r in table.rows]
        return "l" + "c" * width, lines
    spec = [cell for _, cells in blocks for cell in cells]  # a column group per metric (Table 1)
    groups, rules, first = [], [], 2
    for metric, cells in blocks:
        label = METRICS[metric].latex if len(cells) >= 4 else METRICS[metric].latex_column  # a narrow group
        groups.append(rf"\multicolumn{{{len(cells)}}}{{c}}{{{label}}}")
        rules.append(rf"\cmidrule(lr){{{first}-{first + len(cells) - 1}}}")
        first += len(cells)
    lines = [r"\toprule", " & ".join(["", *groups]) + r" \\", " ".join(rules),
             " & ".join(["Model", *(latex_escape(table.label(c)) for _, c in spec)]) + r" \\", r"\midrule"]
    return "l" + "c" * len(spec), lines + [row_line(r, spec, len(spec)) for r in table.rows]


def to_latex(table: TableData, full: bool = False, ci: bool = False) -> str:
    """One float with one caption and a label, fitted to the line (see the module doc); the packages it
    needs are named in the first line."""
    colspec, body = _latex_body(table, full, ci)
    env = "table*" if len(colspec) - 1 > WIDE_COLUMNS else "table"
    limit = f"; LIMITED RUN: first {table.limit} samples per condition" if table.limit else ""
    lines = [rf"% needs \usepackage{{{','.join(LATEX_PACKAGES)}}}; generated by `ntdmbench table` from result "
             rf"files{limit}",
             rf"\begin{{{env}}}[t]", r"\centering", rf"\caption{{{caption(table, full, ci)}}}",
             rf"\label{{tab:{table.id}}}",
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             rf"\begin{{tabular}}{{{colspec}}}", *body, r"\bottomrule", r"\end{tabular}}", rf"\end{{{env}}}"]
    return "\n".join(lines) + "\n"


# --- CSV ------------------------------------------------------------------------------------------

CSV_COLUMNS = ["model", "benchmark", "condition", "metric", "value", "n", "n_failed", "ci_low", "ci_high", "limit"]


def to_csv(tables: list[TableData]) -> str:
    """The canonical long form: one line per (model, benchmark, condition, metric) with a value, its
    sample counts and 95 % interval; ``limit`` is the ``--limit`` of a limited run (empty otherwise)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for table in tables:
        for row in table.rows:
            for cond in list(table.conditions) + ([MEAN] if table.mean else []):
                for metric in METRICS:
                    stat = table.stat(row, metric, cond)
                    if stat is not None:
                        ci = ["" if v is None else f"{v:.4f}" for v in (stat.ci_low, stat.ci_high)]
                        writer.writerow([row.id, table.benchmark, cond, metric, f"{stat.value:.4f}", stat.n,
                                         stat.n_failed, *ci, table.limit or ""])
    return buf.getvalue()


# --- HTML -----------------------------------------------------------------------------------------


_STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:100%;box-sizing:border-box}
.scroll{overflow-x:auto;max-width:100%;margin:1em 0}
table{border-collapse:collapse;border-top:2px solid #000;border-bottom:2px solid #000;font-variant-numeric:tabular-nums}
th,td{padding:3px 9px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th.group{text-align:center;padding-bottom:0}
th.group span{display:block;border-bottom:1px solid #000;margin:0 4px;padding-bottom:2px}
tr.head th{border-bottom:1px solid #000}
p.note{font-size:small;color:#444;margin:.2em 0}
p.limit{font-weight:bold;color:#a00}
</style>"""


def _html_cells(table: TableData, row: RowData, spec: list[tuple[str, str]], rank_of: dict, ci: bool) -> list[str]:
    out = []
    for m, c in spec:
        text = html.escape(printed(table.cell(row, m, c), c))
        rank = rank_of[(m, c)].get(row.id)
        text = f"<b>{text}</b>" if rank == 1 else f"<u>{text}</u>" if rank == 2 else text
        half = _half_width(table.stat(row, m, c)) if ci and c != DROP else None
        out.append(f"<td>{text}{f' <small>±{half:.1f}</small>' if half is not None else ''}</td>")
    return out


def _html_table(table: TableData, full: bool, ci: bool) -> list[str]:
    """A column group per metric (wide), or a section per metric with its own headers (stacked)."""
    blocks = _blocks(table, full)
    rank_of = {(m, c): ranks(table, m, c) for _, spec in blocks for m, c in spec}
    parts = [f'<div class="scroll"><table id="{html.escape(table.id)}">']

    def body(spec: list[tuple[str, str]]) -> list[str]:
        return [f"<tr><td>{html.escape(r.label)}</td>{''.join(_html_cells(table, r, spec, rank_of, ci))}</tr>"
                for r in table.rows]

    if blocks[0][0] is None:
        spec = blocks[0][1]
        parts.append('<thead><tr class="head"><th>Setup</th>'
                     + "".join(f"<th>{html.escape(METRICS[m].label)}</th>" for m, _ in spec) + "</tr></thead><tbody>")
        return parts + body(spec) + ["</tbody></table></div>"]
    sections = [[block] for block in blocks] if table.layout == "stacked" else [blocks]
    for k, groups in enumerate(sections):
        spec = [cell for _, cells in groups for cell in cells]
        parts.append("<thead>" if k == 0 else "<tbody>")
        parts.append("<tr><th></th>" + "".join(f'<th class="group" colspan="{len(cells)}">'
                                              f"<span>{html.escape(METRICS[m].label)}</span></th>"
                                              for m, cells in groups) + "</tr>")
        parts.append('<tr class="head"><th>Model</th>'
                     + "".join(f"<th>{html.escape(table.label(c))}</th>" for _, c in spec) + "</tr>")
        parts.append("</thead><tbody>" if k == 0 else "")
        parts += body(spec) + ["</tbody>"]
    return parts + ["</table></div>"]


def to_html(tables: list[TableData], title: str = "ntdmbench tables", full: bool = True, ci: bool = False) -> str:
    """One page; group headers span (and centre over) their columns; a table wider than the window
    scrolls inside its own box, so the page never does."""
    parts = ["<!doctype html>", '<html><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title>", _STYLE, "</head><body>", f"<h1>{html.escape(title)}</h1>"]
    for table in tables:
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        if table.limit:
            parts.append(f'<p class="note limit">LIMITED RUN: only the first {table.limit} samples of each '
                         "condition</p>")
        parts += _html_table(table, full, ci)
        plain = [n.replace("**bold**", "bold").replace("<ins>underlined</ins>", "underlined")
                 for n in notes(table, full) if not n.startswith("LIMITED")]
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in plain]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(tables: list[TableData], fmt: str, title: str = "ntdmbench tables", columns: str | None = None,
           ci: bool = False) -> str:
    """All ``tables`` in one format: md, latex, csv or html; ``columns`` paper or all (default: paper
    for LaTeX, all for the others)."""
    full = (columns or ("paper" if fmt == "latex" else "all")) == "all"
    renderers = {
        "md": lambda: "\n".join(to_markdown(t, full, ci) for t in tables),
        "latex": lambda: "\n".join(to_latex(t, full, ci) for t in tables),
        "csv": lambda: to_csv(tables),
        "html": lambda: to_html(tables, title, full, ci),
    }
    if fmt not in renderers:
        raise InputError(f"--format {fmt!r} (choose from {', '.join(renderers)})")
    return renderers[fmt]()
