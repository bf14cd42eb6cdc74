"""Suites: loading and validation, and a whole run on the smoke preset (data, training, prediction,
report), with a model that cannot be imported, then a resumed rerun that trains and predicts nothing."""

import json
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from ntdmbench.benchmark.cli import main
from ntdmbench.benchmark.distributed import Dist
from ntdmbench.benchmark.store import read_jsonl
from ntdmbench.benchmark.suites.data import ensure_data
from ntdmbench.benchmark.suites.schema import SuiteError, load_suite, suite_names
from ntdmbench.benchmark.suites.training import training_key
from ntdmbench.reports import tables

PAPER_MODELS = {"resnet50-pose", "starmap", "nemo", "bayesian-amodal", "resnet50-class", "mt-maskrcnn", "ntdm"}

SUITE = """
    extends: smoke
    register:
      mean-pose: "suite_models:MeanPose"
      ghost: "ntdmbench_no_such_module:Ghost"
    models:
      mean: {model: mean-pose, label: Mean pose}
      mean-shift: {model: mean-pose, label: Mean pose shifted, eval_args: {shift: 3.0}}
      ghost: {label: Ghost}
    tables:
      - {id: table1, models: [oracle, random, mean, ghost], train: pascal3d/train}
      - {id: table2, models: [oracle, mean], train: pascal3d/train}
      - {id: table3, models: [mean, mean-shift]}
"""


def test_shipped_suites_resolve():
    names = suite_names()
    for preset in ("quick", "full", "smoke"):
        assert {preset, f"{preset}-table1", f"{preset}-table2", f"{preset}-table3"} <= set(names)
    assert {"table1", "table2", "table3", "paper"} <= set(names)
    quick = load_suite("quick")
    assert [t.id for t in quick.tables] == ["table1", "table2", "table3"] and quick.synthetic == "quick"
    assert set(quick.tables[0].models) == PAPER_MODELS
    assert quick.tables[1].train == "pascal3d/train"  # synthetic OOD-CV has no training split
    assert load_suite("table2").tables[0].train == "oodcv/train"
    t3 = load_suite("quick-table3").tables[0]
    assert t3.categories == ["sofa", "bus", "motorbike"] and len(t3.models) == 6
    assert {quick.rows[m].model for m in t3.models} == {"ntdm"}
    # inference switches reuse the full model's checkpoint; in the paper single alpha_b trains its own,
    # on quick it reuses the full model too (its args spell out the default single_alpha=false)
    def shared(suite):
        key = training_key("ntdm", suite.rows["ntdm"].args, {}, 0)
        return [m for m in t3.models if training_key("ntdm", suite.rows[m].args, {}, 0) == key]

    assert shared(quick) == t3.models
    assert "ntdm-single-bin" not in shared(load_suite("paper")) and len(shared(load_suite("paper"))) == 5
    assert len({str(quick.rows[m].eval_args) for m in t3.models}) == 6
    t2 = load_suite("table2").tables[0]
    assert list(t2.conditions) == ["iid", "shape", "pose", "texture", "context", "weather"] and t2.clean == "iid"


def test_suite_errors_name_the_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: smoke\nmodelz: {}\n")
    with pytest.raises(SuiteError, match="unknown key.*modelz"):
        load_suite(str(bad))
    bad.write_text("extends: smoke\ntables: [table9]\n")
    with pytest.raises(SuiteError, match="table 'table9' is not in smoke"):
        load_suite(str(bad))
    with pytest.raises(SuiteError, match="unknown suite 'quik'"):
        load_suite("quik")
    with pytest.raises(SuiteError, match=r"metrics \['acc_pi7'\]"):
        load_suite("smoke", overrides=["tables.table1.metrics=[acc_pi7]"])
    with pytest.raises(SuiteError, match="unknown key.*table1"):
        load_suite("smoke", overrides=["table1.metrics=[top1]"])
    with pytest.raises(SuiteError, match="--models nobody"):
        load_suite("smoke", models=["nobody"])
    suite = load_suite("smoke", overrides=["models.random.eval_args.seed=7"], tables=["table3"], models=["random"])
    assert suite.rows["random"].eval_args == {"seed": 7} and [t.models for t in suite.tables] == [["random"]]


def test_smoke_suite_end_to_end_and_resume(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(SUITE))
    argv = ["suite", "run", str(path), "--root", str(tmp_path / "data"), "--out", str(tmp_path / "runs"),
            "--no-progress"]
    assert main(argv) == 1  # the ghost row failed; everything else ran
    captured = capsys.readouterr()
    report = Path(captured.out.strip().splitlines()[-1].removeprefix("report: "))
    assert report == tmp_path / "runs" / "suites" / "suite" / "report.md" and report.is_file()
    assert "ghost (train)" in captured.err
    index = json.loads((report.parent / "index.json").read_text())
    assert [(f["row"], f["stage"]) for f in index["failures"]] == [("ghost", "train")]
    assert "ntdmbench_no_such_module" in index["failures"][0]["error"]

    occ, ood, ablation = tables.load(report.parent)
    rows = {r.id: r for r in occ.rows}
    assert all(occ.cell(rows["oracle"], m, c) == 100.0 for m in occ.metrics for c in occ.conditions)
    assert occ.cell(rows["mean"], "amodal_iou", "L0") == tables.NA  # pose only
    assert isinstance(occ.cell(rows["mean"], "acc_pi6", "L2"), float)
    assert occ.cell(rows["ghost"], "acc_pi6", "L0") == tables.MISSING
    assert ood.cell(ood.rows[0], "acc_pi6", "mean") == 100.0
    assert [r.metrics["L0"]["n"] for r in ablation.rows] == [3, 3]  # smoke has car and sofa: the 3 sofas
    # Table 1 (all categories) and Table 3 (some) of one model never share a run directory
    runs = {t: {r["id"]: r["results"]["L0"] for r in index["tables"][t]["rows"] if r["id"] == "mean"}
            for t in ("table1", "table3")}
    assert runs["table1"]["mean"]["run_dir"] != runs["table3"]["mean"]["run_dir"]
    for table, n in (("table1", 6), ("table3", 3)):
        assert json.loads((Path(runs[table]["mean"]["run_dir"]) / "metrics.json").read_text())["n"] == n
    shifted = {r["id"]: r["rot_err"] for r in read_jsonl(ablation.rows[1].samples["L0"])}
    plain = {r["id"]: r["rot_err"] for r in read_jsonl(ablation.rows[0].samples["L0"])}
    assert shifted.keys() == plain.keys() and shifted != plain  # the eval switch changed the predictions

    text = report.read_text()
    for needle in ("## Table 1", "## Table 2", "## Table 3", "## Missing results", "| Ghost | – |",
                   "table1_accuracy_vs_occlusion.png", "table1_error_cdf.png", "table1_time_vs_accuracy.png"):
        assert needle in text
    for png in (report.parent / "plots").glob("*.png"):
        with Image.open(png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    assert len(list((report.parent / "plots").glob("*.png"))) >= 6
    assert (report.parent / "results.csv").read_text().startswith("model,benchmark,condition,metric,value,n,")
    assert len(list((report.parent / "plots").glob("*.pdf"))) == len(list((report.parent / "plots").glob("*.png")))
    results = json.loads((report.parent / "results.json").read_text())
    cell = results["tables"]["table1"]["results"]["oracle"]["conditions"]["L2"]
    assert cell["metrics"]["acc_pi6"]["value"] == 100.0 and Path(cell["run_dir"]).is_dir()
    assert results["config"]["name"] == "suite" and results["provenance"]["git"].get("commit")
    assert "[0/30 jobs, ETA ?] table1: Oracle on L0" in captured.err and "[30/30 jobs, ETA 0s]" in captured.err
    assert (report.parent / "tables" / "table1.tex").read_text().count(r"\toprule") == 1

    # one checkpoint for 'mean' (shared by both tables); the rerun trains and predicts nothing
    checkpoints = list((tmp_path / "runs" / "checkpoints" / "mean-pose").glob("*.pth"))
    assert len(checkpoints) == 1
    losses = (checkpoints[0].parent / f"{checkpoints[0].stem}.epochs.csv").read_text().splitlines()
    assert losses[0] == "stage,epoch,loss" and [line.split(",")[1] for line in losses[1:]] == ["1", "2"]
    stamp = checkpoints[0].stat().st_mtime_ns
    shards = sorted((tmp_path / "runs").glob("*/*/*/*/predictions/shard-*.jsonl"))
    sizes = [s.stat().st_size for s in shards]
    first_training = json.loads((report.parent / "index.json").read_text())["training"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 checkpoint(s), 1 cached, 1 job(s)" in err  # only the ghost is tried again
    assert "table1: Oracle on L1 (occluded-pascal3d/val/L1): reused, all 6 samples were already predicted" in err
    training = json.loads((report.parent / "index.json").read_text())["training"]
    mean = [k for k in training if training[k]["model"] == "mean-pose"]
    assert mean and all(training[k]["cached"] and training[k]["seconds"] == first_training[k]["seconds"] > 0
                        for k in mean)  # a cached checkpoint keeps the training time it took
    assert checkpoints[0].stat().st_mtime_ns == stamp
    assert [s.stat().st_size for s in shards] == sizes
    with pytest.raises(SuiteError, match="another synthetic benchmark than preset 'quick'"):
        ensure_data(load_suite("quick"), tmp_path / "data", Dist(), print)  # never mixes presets
    meta = tmp_path / "data" / "synthetic.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": "ntdmbench-synthetic/1"}))
    with pytest.raises(SuiteError, match="older generator"):
        ensure_data(load_suite("smoke"), tmp_path / "data", Dist(), print)  # nor generator versions


def test_progress_line_counts_jobs_and_estimates_the_time_left():
    from ntdmbench.benchmark.suites.prediction import Progress, format_duration

    progress = Progress(4)
    assert progress.line() == "[0/4 jobs, ETA ?]"
    progress.done, progress.predicting_s = 1, [30.0]  # a reused job does not count towards the ETA
    assert progress.line() == "[1/4 jobs, ETA 1m30s]"
    progress.done = 4
    assert progress.line() == "[4/4 jobs, ETA 0s]" and format_duration(3725) == "1h02m" and format_duration(9) == "9s"
