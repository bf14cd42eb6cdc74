"""Tables from result files: ranks (bold / underline), × and – cells, pooled mean and drop, formats."""

import csv
import io
import json
import math

import pytest

from ntdmbench.benchmark.cli import main
from ntdmbench.benchmark.metrics import METRICS
from ntdmbench.reports import tables


def _samples(errors_deg, ious=None, correct=None):
    rows = []
    for k, err in enumerate(errors_deg):
        row = {"id": f"car/{k:03d}", "category": "car", "status": "ok",
               "rot_err": math.radians(err), "rot_err_deg": err, "time_s": 0.01}
        if ious is not None:
            row["amodal_iou"] = ious[k]
        if correct is not None:
            row["pred_category"] = "car" if correct[k] else "bus"
            row["class_correct"] = bool(correct[k])
        rows.append(row)
    return rows


def _metrics(rows, tasks):
    from ntdmbench.benchmark.scoring import summarize

    return {**summarize(rows), "tasks": tasks}


def make_suite_dir(root, spec):
    """A suite run directory as ``suite run`` leaves it; spec: {table: {row: {cond: (rows, tasks)}}}."""
    index = {"suite": "t", "title": "Test tables", "tables": {}}
    for order, (tid, table) in enumerate(spec.items()):
        entry = {**table["meta"], "order": order, "rows": []}
        for row_id, conds in table["rows"].items():
            row = {"id": row_id, "label": row_id.upper(), "model": row_id, "status": "ok" if conds else "failed",
                   "results": {}}
            for cond, (rows, tasks) in conds.items():
                folder = root / "results" / tid / row_id / cond
                folder.mkdir(parents=True)
                (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                (folder / "metrics.json").write_text(json.dumps(_metrics(rows, tasks)))
                row["results"][cond] = {"metrics": str((folder / "metrics.json").relative_to(root)),
                                        "samples": str((folder / "samples.jsonl").relative_to(root))}
            entry["rows"].append(row)
        index["tables"][tid] = entry
    (root / "index.json").write_text(json.dumps(index))
    return root


ALL = ["pose", "amodal", "class"]
OCC = {"conditions": ["L0", "L1"], "clean": "L0", "mean": None, "metrics": ["acc_pi6", "amodal_iou", "top1"],
       "title": "Occlusion", "benchmark": "occluded-pascal3d", "layout": "wide"}
OOD = {"conditions": ["iid", "shape", "pose"], "clean": "iid", "mean": ["shape", "pose"], "metrics": ["acc_pi6"],
       "title": "OOD", "benchmark": "oodcv", "layout": "stacked"}


@pytest.fixture
def suite_dir(tmp_path):
    good = _samples([1, 2, 3, 50], [1.0, 1.0, 0.5, 0.5], [1, 1, 1, 0])  # 75 % / 75 % / 75 %
    mid = _samples([1, 2, 50, 50], [0.5, 0.5, 0.5, 0.5], [1, 0, 0, 0])  # 50 % / 50 % / 25 %
    low = _samples([1, 50, 50, 50])  # 25 %, pose only
    return make_suite_dir(tmp_path, {
        "occ": {"meta": OCC, "rows": {
            "a": {"L0": (good, ALL), "L1": (mid, ALL)},
            "b": {"L0": (mid, ALL), "L1": (mid, ALL)},
            "c": {"L0": (low, ["pose"]), "L1": (low, ["pose"])},
            "d": {},  # failed before any result: capability unknown
        }},
        "ood": {"meta": OOD, "rows": {
            "a": {"iid": (good, ["pose"]), "shape": (good, ["pose"]), "pose": (_samples([1, 50]), ["pose"])},
            "b": {"iid": (low, ["pose"]), "shape": (mid, ["pose"]), "pose": (mid, ["pose"])},
        }},
    })


def test_cells_ranks_mean_and_drop(suite_dir):
    occ, ood = tables.load(suite_dir)
    a, b, c, d = occ.rows
    assert occ.cell(a, "acc_pi6", "L0") == 75.0 and occ.cell(b, "acc_pi6", "L0") == 50.0
    assert occ.cell(c, "amodal_iou", "L0") == tables.NA and occ.cell(c, "top1", "L1") == tables.NA
    assert occ.cell(d, "acc_pi6", "L0") == tables.MISSING
    assert occ.cell(a, "acc_pi6", tables.DROP) == pytest.approx(-25.0)
    assert tables.ranks(occ, "acc_pi6", "L0") == {"a": 1, "b": 2}
    assert tables.ranks(occ, "acc_pi6", "L1") == {"a": 1, "b": 1}  # a tie shares the best rank; the worst is plain
    assert tables.ranks(occ, "acc_pi6", tables.DROP) == {}
    # mean pools samples: (4 x 75 % + 2 x 50 %) / 6 for a, not the mean of the two percentages
    assert ood.columns() == ["iid", "shape", "pose", "mean", "drop"]
    assert ood.cell(ood.rows[0], "acc_pi6", "mean") == pytest.approx(100 * 4 / 6)
    assert ood.cell(ood.rows[0], "acc_pi6", tables.DROP) == pytest.approx(100 * 4 / 6 - 75.0)
    assert ood.cell(ood.rows[1], "acc_pi6", tables.DROP) == pytest.approx(50.0 - 25.0)


def test_lower_is_better_ranks(suite_dir):
    occ, _ = tables.load(suite_dir)
    # median errors (deg): a 2.5, b 26, c 50 -> lower is better
    assert tables.ranks(occ, "median_err_deg", "L0") == {"a": 1, "b": 2}


def test_markdown_and_latex(suite_dir):
    occ, ood = tables.load(suite_dir)
    md = tables.to_markdown(occ)
    assert "| A | **75.0** | **50.0** | −25.0 |" in md
    assert "| B | <ins>50.0</ins> | **50.0** | +0.0 |" in md
    assert "| C | 25.0 | 25.0 | +0.0 |" in md
    assert "| D | – | – | – |" in md
    assert "| C | × | × | × |" in md  # no amodal output: the IoU block
    tex = tables.to_latex(occ, full=True)
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-4}", r"\multicolumn{3}{c}",
                  r"\textbf{75.0}", r"\underline{50.0}", r"$\times$", "$-$25.0"):
        assert token in tex
    assert tex.count(r"\\") == 2 + 4  # two header lines, four model rows
    stacked = tables.to_latex(ood, full=True)
    assert stacked.count(r"\midrule") == 1 and r"$\Delta$" in stacked and "mean" in stacked


def test_csv_is_the_canonical_long_form(suite_dir):
    text = tables.to_csv(tables.load(suite_dir))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["model", "benchmark", "condition", "metric", "value", "n", "n_failed", "ci_low", "ci_high",
                            "limit"]
    found = {(r["model"], r["benchmark"], r["condition"], r["metric"]): float(r["value"]) for r in rows}
    assert found[("a", "occluded-pascal3d", "L0", "acc_pi6")] == 75.0
    assert found[("a", "occluded-pascal3d", "L0", "median_err_deg")] == 2.5
    assert found[("a", "oodcv", "mean", "acc_pi6")] == pytest.approx(66.6667, abs=1e-4)
    line = next(r for r in rows if (r["model"], r["condition"], r["metric"]) == ("a", "L0", "acc_pi6"))
    assert (line["n"], line["n_failed"]) == ("4", "0") and float(line["ci_low"]) < 75.0 < float(line["ci_high"])
    assert ("c", "occluded-pascal3d", "L0", "amodal_iou") not in found  # no capability, no line
    assert not any(k[0] == "d" for k in found)
    assert {r["metric"] for r in rows} <= set(METRICS)


def test_html_and_cli(suite_dir, capsys):
    page = tables.to_html(tables.load(suite_dir))
    assert "<b>75.0</b>" in page and "<u>50.0</u>" in page and 'colspan="3"' in page
    assert main(["table", str(suite_dir), "--format", "csv", "--table", "ood"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model,benchmark,condition,metric,value,n,") and "occluded" not in out
    assert main(["table", str(suite_dir.parent), "--format", "md"]) == 2
    assert "no index.json" in capsys.readouterr().err


def test_plots_keep_one_style_per_model_label_thresholds_and_title_by_name(tmp_path, monkeypatch):
    from ntdmbench.reports import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    good = _samples([1, 2, 3, 50], [1.0, 1.0, 0.5, 0.5], [1, 1, 1, 0])
    pose_only = _samples([1, 50, 50, 50])
    root = make_suite_dir(tmp_path / "suite", {"occ": {"meta": OCC, "rows": {  # the pose-only row first
        "c": {"L0": (pose_only, ["pose"]), "L1": (pose_only, ["pose"])},
        "a": {"L0": (good, ALL), "L1": (good, ALL)}, "b": {"L0": (good, ALL), "L1": (pose_only, ALL)}}}})
    (occ,) = tables.load(root)
    assert plots.accuracy_vs_occlusion(occ, tmp_path / "occ.png")
    axes = [ax for ax in figures[0].axes if ax.get_visible()]
    drawn = {}
    for ax in axes:
        for bars in ax.containers:  # one error-bar container per model: its data line and 95 % bars
            line = bars.lines[0]
            drawn.setdefault(bars.get_label(), set()).add((line.get_color(), line.get_marker(), line.get_linestyle()))
    assert all(len(c) == 1 for c in drawn.values())  # the same model keeps its style in every panel
    assert len({next(iter(c))[0] for c in drawn.values()}) == len(drawn) == 3  # and models differ
    assert "C" in drawn and not [b for b in axes[2].containers if b.get_label() == "C"]  # pose-only: no top-1 line
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["C", "A", "B"]
    assert len({c[1] for s in drawn.values() for c in s}) == 3 and len({c[2] for s in drawn.values() for c in s}) == 3
    assert figures[0]._suptitle.get_text().startswith("Occlusion")  # the table's title, not its id
    assert axes[0].get_ylabel() == METRICS["acc_pi6"].label and axes[0].containers  # error bars drawn
    assert plots.error_cdf(occ, tmp_path / "cdf.png")
    texts = [t.get_text() for t in figures[1].axes[0].texts]
    assert "π/18 (10°)" in texts and "π/6 (30°)" in texts and figures[1].axes[0].get_xlabel() == "rotation error (°)"


def test_plots_write_a_pdf_beside_each_png(suite_dir, tmp_path):
    from ntdmbench.reports import plots

    made = plots.all_plots(tables.load(suite_dir)[0], tmp_path)
    assert made and all(p.with_suffix(".pdf").read_bytes().startswith(b"%PDF") for p in made)


def test_latex_escape_sets_greek_letters_and_their_subscripts_as_math():
    assert tables.latex_escape("single α_b") == r"single $\alpha_{b}$"  # Table 3's row, as the paper sets it
    assert tables.latex_escape("Acc@π/6 (%)") == r"Acc@$\pi$/6 (\%)"
    assert tables.latex_escape("w/o BG_2 & more") == r"w/o BG\_2 \& more"


def _table(values, metric="acc_pi6"):
    rows = [tables.RowData(f"r{k}", f"R{k}", "ok", {"pose"}, {"L0": {metric: v, "n": 9}}) for k, v in enumerate(values)]
    return tables.TableData("t", "Table 4: T", "b", ["L0"], [metric], rows)


def test_marks_follow_the_printed_values():
    assert tables.ranks(_table([61.04, 60.96, 50.0, 4.0]), "acc_pi6", "L0") == {"r0": 1, "r1": 1, "r2": 2}  # both print 61.0
    assert tables.ranks(_table([0.0, 0.0, 0.0]), "acc_pi6", "L0") == {}  # all equal: nothing marked
    assert tables.ranks(_table([100.0, 0.0, 0.0]), "acc_pi6", "L0") == {"r0": 1}  # the tied worst is not underlined
    assert tables.ranks(_table([9.96, 12.0, 30.0], "median_err_deg"), "median_err_deg", "L0") == {"r0": 1, "r1": 2}


def test_paper_columns_labels_caption_and_limit(suite_dir):
    occ, ood = tables.load(suite_dir)
    occ.paper_columns, occ.labels, occ.limit = {"amodal_iou": ["L1"]}, {"L0": "w/o"}, 2
    assert occ.columns("acc_pi6", full=False) == ["L0", "L1"] and occ.columns("amodal_iou", full=False) == ["L1"]
    tex = tables.to_latex(occ)
    assert "w/o & L1 & L1 & w/o & L1" in tex and r"$\Delta$" not in tex and "L0" not in tex.split("\\midrule")[0]
    assert r"\caption{Occlusion. Best in \textbf{bold}" in tex and tex.count(r"\caption") == 1
    assert r"\usepackage{booktabs,graphicx}" in tex.splitlines()[0] and r"\begin{table}[t]" in tex
    assert r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}" in tex
    assert "first 2 samples" in tex and "LIMITED RUN" in tables.to_markdown(occ)
    assert "LIMITED RUN" in tables.to_html([occ]) and tables.to_csv([occ]).splitlines()[1].endswith(",2")
    assert r"$\Delta$" in tables.to_latex(occ, full=True)
    with_ci = tables.to_latex(occ, ci=True)
    assert r"{\scriptsize$\pm$" in with_ci and " ±" in tables.to_markdown(occ, ci=True)
    ood.conditions += ["texture", "context", "weather", "snow", "fog"]  # more than WIDE_COLUMNS columns: table*
    assert r"\begin{table*}[t]" in tables.to_latex(ood, full=True)


def test_results_json_holds_every_value_with_n_interval_and_run_dir(suite_dir):
    from ntdmbench.reports import results

    doc = results.build(suite_dir, tables.load(suite_dir))
    assert doc["schema"] == results.SCHEMA and doc["limit"] is None
    a = doc["tables"]["occ"]["results"]["a"]
    cell = a["conditions"]["L0"]["metrics"]["acc_pi6"]
    assert (cell["value"], cell["n"], cell["n_failed"]) == (75.0, 4, 0) and cell["ci95"][0] < 75.0 < cell["ci95"][1]
    assert "run_dir" in a["conditions"]["L0"] and a["capabilities"] == ["amodal", "class", "pose"]
    assert "amodal_iou" not in doc["tables"]["occ"]["results"]["c"]["conditions"]["L0"]["metrics"]  # no capability
    assert doc["tables"]["occ"]["results"]["d"]["conditions"] == {}
    assert doc["tables"]["ood"]["results"]["a"]["conditions"]["mean"]["metrics"]["acc_pi6"]["n"] == 6
    assert doc["metrics"]["median_err_deg"]["higher_is_better"] is False
    json.dumps(doc, allow_nan=False)  # strict JSON
