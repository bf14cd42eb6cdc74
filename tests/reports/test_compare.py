"""``ntdmbench compare``: paired bootstrap on the shared ids of two runs, or of two rows of a suite."""

from __future__ import annotations

import json
import math

import pytest

from ntdmbench.benchmark.cli import main


def _run(folder, model, errors_deg, extra_id=None):
    folder.mkdir(parents=True)
    rows = [{"id": f"car/{k:03d}", "rot_err": math.radians(e), "rot_err_deg": e, "class_correct": e < 30}
            for k, e in enumerate(errors_deg)]
    if extra_id:
        rows.append({"id": extra_id, "rot_err": 0.0, "rot_err_deg": 0.0, "class_correct": True})
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "metrics.json").write_text(json.dumps({"model": model, "dataset": "pascal3d/val"}))
    return folder


def test_two_run_directories(tmp_path, capsys):
    a = _run(tmp_path / "a", "good", [5.0] * 30 + [50.0] * 10, extra_id="car/only-in-a")  # 75 % below pi/6
    b = _run(tmp_path / "b", "bad", [5.0] * 10 + [50.0] * 30)  # 25 %
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--metrics", "acc_pi6,median_err_deg,top1", "--json", str(out),
                 "--resamples", "2000"]) == 0
    text = capsys.readouterr().out
    assert "### A = good, B = bad" in text and "| pascal3d/val | Acc@π/6 (%) ↑ | 75.0 | 25.0 | +50.0 |" in text
    doc = json.loads(out.read_text())
    acc = next(c for c in doc["comparisons"] if c["metric"] == "acc_pi6")
    assert acc["n"] == 40  # the id only A has is left out
    assert acc["difference"] == pytest.approx(50.0) and 20 < acc["ci95"][0] < 50 < acc["ci95"][1] < 80
    assert acc["p_value"] < 0.01
    median = next(c for c in doc["comparisons"] if c["metric"] == "median_err_deg")
    assert median["difference"] == pytest.approx(-45.0)  # lower is better: A's median error is 45 degrees lower
    assert {c["metric"] for c in doc["comparisons"]} == {"acc_pi6", "median_err_deg", "top1"}


def test_a_model_against_itself_is_no_difference(tmp_path, capsys):
    a = _run(tmp_path / "a", "m", [5.0, 50.0, 20.0, 90.0])
    assert main(["compare", str(a), str(a), "--metrics", "acc_pi6", "--json", str(tmp_path / "c.json")]) == 0
    (c,) = json.loads((tmp_path / "c.json").read_text())["comparisons"]
    assert c["difference"] == 0.0 and c["p_value"] == 1.0


def test_two_rows_of_a_suite_and_errors(smoke_suite, capsys):
    assert main(["compare", "--suite", str(smoke_suite), "oracle", "random", "--metrics", "acc_pi6",
                 "--resamples", "500"]) == 0
    text = capsys.readouterr().out
    for cond in ("table1/L0", "table1/L3", "table2/weather", "table3/L0"):
        assert f"| {cond} | Acc@π/6 (%) ↑ | 100.0 |" in text
    assert main(["compare", "--suite", str(smoke_suite), "oracle", "nobody"]) == 2
    assert "share no result" in capsys.readouterr().err
    assert main(["compare", str(smoke_suite), str(smoke_suite)]) == 2
    assert "no samples.jsonl" in capsys.readouterr().err
