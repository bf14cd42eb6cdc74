import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import toy_data
from ntdmbench.benchmark.cli import main
from ntdmbench.benchmark.runner import RunConfig, run, score_run, shard_ids
from ntdmbench.benchmark.store import RunDir, read_jsonl
from ntdmbench.models.reference import OraclePredictor, RandomPredictor

TESTS = Path(__file__).parents[1]  # the helper modules (toy_data, suite_models)


def test_oracle_scores_perfectly(tmp_path):
    ds = toy_data.toy_dataset(tmp_path / "data", n=20)
    result = run(RunConfig(model="oracle", dataset="toy/val", out=str(tmp_path / "runs"), progress=False),
                 dataset=ds, model=OraclePredictor())
    m = result.metrics
    assert (m["acc_pi6"], m["acc_pi18"], m["median_err_deg"], m["amodal_iou"], m["top1"]) == (100, 100, 0, 100, 100)
    assert m["n"] == 20 and m["n_failed"] == 0
    rows = list(read_jsonl(result.run_dir.file("samples.jsonl")))
    assert all(r["amodal_iou"] == 1.0 and r["rot_err"] < 1e-7 for r in rows)
    assert set(m["per_category"]) == {"aeroplane", "bicycle", "boat", "bottle"}
    assert all(v["acc_pi6"] == 100 for v in m["per_category"].values())
    for name in ("config.yaml", "provenance.json", "log.txt", "metrics.json"):
        assert result.run_dir.file(name).is_file()
    prov = json.loads(result.run_dir.file("provenance.json").read_text())
    assert {"git", "versions", "device", "seed", "started", "finished"} <= set(prov)


def test_random_scores_about_chance(tmp_path):
    ds = toy_data.toy_dataset(tmp_path / "data", n=400)
    m = run(RunConfig(model="random", dataset="toy/val", out=str(tmp_path / "runs"), batch_size=50, progress=False),
            dataset=ds, model=RandomPredictor()).metrics
    # chance for a uniform rotation: P(err < t) = (t - sin t)/pi -> 0.75 % at pi/6; median ~132 degrees
    assert m["acc_pi6"] < 3.0 and m["acc_pi18"] < 1.0
    assert 120 < m["median_err_deg"] < 145
    assert 2.0 < m["top1"] < 16.0  # 1/12 = 8.3 %
    assert m["amodal_iou"] < 40.0


def test_failures_are_recorded_and_the_run_goes_on(tmp_path):
    toy_data.register(tmp_path / "data", n=20)
    ds = toy_data.toy_dataset(tmp_path / "data", n=20)
    result = run(RunConfig(model="flaky-oracle", dataset="toy/val", out=str(tmp_path / "runs"), batch_size=4,
                           progress=False), dataset=ds, model=toy_data.FlakyOracle(every=5))
    m = result.metrics
    assert m["n"] == 20 and m["n_failed"] == 4  # indices 0, 5, 10, 15
    assert m["acc_pi6"] == 80.0 and m["top1"] == 80.0
    preds = result.run_dir.read_predictions()
    assert preds["aeroplane/img_0000"].failure == "RuntimeError: cannot handle aeroplane/img_0000"
    rows = {r["id"]: r for r in read_jsonl(result.run_dir.file("samples.jsonl"))}
    assert rows["aeroplane/img_0000"]["rot_err"] == math.pi and rows["aeroplane/img_0000"]["amodal_iou"] == 0.0


def test_corrupt_image_fails_only_that_sample(tmp_path):
    ds = toy_data.toy_dataset(tmp_path / "data", n=8)
    ds.load(ds.ids()[3]).image_path.write_bytes(b"not a png")
    result = run(RunConfig(model="random", dataset="toy/val", out=str(tmp_path / "runs"), progress=False),
                 dataset=ds, model=RandomPredictor())
    preds = result.run_dir.read_predictions()
    failed = {i: p.failure for i, p in preds.items() if p.failure}
    assert list(failed) == [ds.ids()[3]] and "cannot read image" in failed[ds.ids()[3]]
    assert result.metrics["n_failed"] == 1


def test_resume_skips_finished_ids_and_fresh_sets_old_results_aside(tmp_path):
    ds = toy_data.toy_dataset(tmp_path / "data", n=12)
    cfg = RunConfig(model="oracle", dataset="toy/val", out=str(tmp_path / "runs"), progress=False)
    first = run(cfg, dataset=ds, model=OraclePredictor())
    shard = first.run_dir.shard(0)
    shard.write_text("".join(shard.read_text().splitlines(keepends=True)[:5]))  # as if stopped after 5
    second = run(cfg, dataset=ds, model=OraclePredictor())
    assert second.run_dir.path == first.run_dir.path and second.metrics["n"] == 12
    ids = [r["id"] for r in read_jsonl(second.run_dir.shard(0))]
    assert sorted(ids) == ds.ids()  # each id written exactly once across both sessions
    cfg.fresh = True
    third = run(cfg, dataset=ds, model=OraclePredictor())
    assert third.metrics["n"] == 12
    old = list(third.run_dir.path.glob("predictions.old-*/shard-000.jsonl"))
    assert len(old) == 1 and len(list(read_jsonl(old[0]))) == 12


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    ds = toy_data.toy_dataset(tmp_path / "data", n=6)
    cfg = RunConfig(model="oracle", dataset="toy/val", out=str(tmp_path / "runs"), progress=False)
    run_dir = run(cfg, dataset=ds, model=OraclePredictor()).run_dir
    kept = "".join(run_dir.shard(0).read_text().splitlines(keepends=True)[:3])
    run_dir.shard(0).write_text(kept + '{"id": "boat/img_0005", "azim')  # a kill in the middle of a write
    assert len(run_dir.finished_ids()) == 3
    result = run(cfg, dataset=ds, model=OraclePredictor())
    lines = run_dir.shard(0).read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line) for line in lines)
    assert result.metrics["acc_pi18"] == 100


def test_rescoring_reproduces_metrics(tmp_path):
    ds = toy_data.toy_dataset(tmp_path / "data", n=10)
    result = run(RunConfig(model="random", dataset="toy/val", out=str(tmp_path / "runs"), progress=False),
                 dataset=ds, model=RandomPredictor())
    again = score_run(result.run_dir, ds)
    assert again == result.metrics


def test_shards_partition_ids_without_padding():
    ids = [f"id{i}" for i in range(10)]
    parts = [shard_ids(ids, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == ids and [len(p) for p in parts] == [4, 3, 3]


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import toy_data
toy_data.register(Path(sys.argv[1]), n=int(sys.argv[2]))
from ntdmbench.benchmark.cli import main
raise SystemExit(main(sys.argv[3:]))
"""


def _cli(driver, data, n, *args, **popen):
    cmd = [sys.executable, str(driver), str(data), str(n), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _per_sample(run_dir: RunDir) -> dict[str, tuple]:
    rows = [r for shard in run_dir.shards() for r in read_jsonl(shard)]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids in the shards"
    return {r["id"]: (r["category"], r["azimuth"], r["elevation"], r["theta"]) for r in rows}


def test_sigkill_mid_run_then_restart_gives_the_uninterrupted_result(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS)))
    n = 40
    args = ["run", "--model", "slow-oracle", "--dataset", "toy/val", "--batch-size", "2", "--no-progress",
            "--model-args", "delay=0.04"]

    reference = _cli(driver, tmp_path / "data", n, *args, "--out", str(tmp_path / "ref"))
    assert reference.wait(timeout=120) == 0, reference.stderr.read()

    out = tmp_path / "killed"
    proc = _cli(driver, tmp_path / "data", n, *args, "--out", str(out))
    deadline = time.time() + 60
    shard = None
    while time.time() < deadline:
        found = list(out.glob("**/predictions/shard-000.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 10:
            shard = found[0]
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert shard is not None and 10 <= len(shard.read_text().splitlines()) < n

    restart = _cli(driver, tmp_path / "data", n, *args, "--out", str(out))
    assert restart.wait(timeout=120) == 0, restart.stderr.read()

    ref_dir = RunDir(next((tmp_path / "ref").glob("**/config.yaml")).parent)
    run_dir = RunDir(shard.parent.parent)
    assert _per_sample(run_dir) == _per_sample(ref_dir)
    assert len(_per_sample(run_dir)) == n
    ref_rows = [r for r in read_jsonl(ref_dir.file("samples.jsonl"))]
    rows = [r for r in read_jsonl(run_dir.file("samples.jsonl"))]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(rows) == strip(ref_rows)


def test_cli_run_score_and_ls(tmp_path, capsys):
    toy_data.register(tmp_path / "data", n=24)
    out = tmp_path / "runs"
    assert main(["run", "--model", "oracle", "--dataset", "toy/val", "--out", str(out), "--limit", "8",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "results:" in printed and "100.0" in printed
    run_dir = printed.split("results:")[1].strip()
    assert main(["score", run_dir, "--json", str(tmp_path / "m.json")]) == 0
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["n"] == 8 and saved["acc_pi6"] == 100.0
    assert main(["ls"]) == 0
    listing = capsys.readouterr().out
    for word in ("models:", "oracle", "random", "datasets:", "toy/val", "metrics:", "acc_pi6", "suites:"):
        assert word in listing


@pytest.mark.parametrize("argv, message", [
    (["run", "--model", "oracel", "--dataset", "toy/val"], "unknown model 'oracel'; did you mean 'oracle'"),
    (["run", "--model", "oracle", "--dataset", "toy/vall"], "unknown dataset 'toy/vall'"),
    (["run", "--model", "oracle", "--dataset", "toy/val", "--checkpoint", "/nope.pth"], "/nope.pth: checkpoint not found"),
    (["run", "--model", "oracle", "--dataset", "toy/val", "--model-args", "seed"], "expected key=value"),
    (["run", "--model", "random", "--dataset", "toy/val", "--model-args", "bogus=1"], "bad --model-args"),
    (["score", "/no/such/run"], "not a run directory"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, message):
    toy_data.register(tmp_path / "data", n=4)
    assert main(argv + (["--out", str(tmp_path)] if argv[0] == "run" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ntdmbench: error:") and message in err and "\n" not in err


def test_python_m_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "ntdmbench", "ls", "models"], capture_output=True, text=True)
    assert out.returncode == 0 and "oracle" in out.stdout and out.stderr == ""
