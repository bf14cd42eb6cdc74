"""torchrun: 1 and 2 gloo workers on CPU give the same per-sample results; shards split without
padding or overlap; per-category training is spread over the ranks and joined."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ntdmbench.benchmark.distributed import Dist, init_from_env, spread
from ntdmbench.benchmark.store import read_jsonl

TESTS = Path(__file__).parents[1]  # the helper modules (toy_data, suite_models)

SUITE = """
    extends: smoke
    register:
      mean-pose: "suite_models:MeanPose"
    models:
      mean: {model: mean-pose, label: Mean pose, per_category: true, batch_size: 2}
      random: {batch_size: 3}
    tables:
      - {id: table1, models: [random, mean], train: pascal3d/train}
      - {id: table3, models: [random]}
"""


def test_spread_and_single_process_defaults(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist, device = init_from_env("cpu")
    assert dist == Dist() and device == "cpu" and dist.gather("x") == ["x"]
    jobs = list(range(7))
    shares = [spread(jobs, Dist(rank, 3)) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        init_from_env("cpu")


def _per_sample(suite_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for path in sorted((suite_dir / "results").rglob("samples.jsonl")):
        rows = [{k: v for k, v in r.items() if k != "time_s"} for r in read_jsonl(path)]
        out[str(path.relative_to(suite_dir))] = sorted(rows, key=lambda r: r["id"])
    return out


def _one_and_two_workers(args: list[str], env: dict[str, str], tmp_path: Path):
    """The same ``python -m ntdmbench`` command in one process (``--out one``), then under a 2-rank
    torchrun (``--out two``); both must succeed. Returns the torchrun process."""
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", *args, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert two.returncode == 0, two.stderr[-2000:]
    return two


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_one_and_two_workers_agree(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    args = ["-m", "ntdmbench", "suite", "run", str(suite), "--root", str(tmp_path / "data"), "--no-progress"]
    two = _one_and_two_workers(args, env, tmp_path)
    assert two.stdout.count("report: ") == 1  # only rank 0 reports

    a, b = _per_sample(tmp_path / "one" / "suites" / "suite"), _per_sample(tmp_path / "two" / "suites" / "suite")
    assert len(a) == 9 and a == b

    # every run of the 2-worker job has two disjoint shards that hold every scored id exactly once
    configs = list((tmp_path / "two").rglob("config.yaml"))
    assert len(configs) == 9  # table3 (sofa only) has its own run of random on L0, not table1's
    for config in configs:
        shards = [[r["id"] for r in read_jsonl(config.parent / "predictions" / f"shard-{k:03d}.jsonl")] for k in (0, 1)]
        ids = shards[0] + shards[1]
        assert len(ids) == len(set(ids)) and shards[0] and shards[1]
        assert {r["id"] for r in read_jsonl(config.parent / "samples.jsonl")} <= set(ids)

    # the per-category training: one category on each rank, joined into one checkpoint
    assert "rank 0] training mean-pose [car]" in two.stderr and "rank 1] training mean-pose [sofa]" in two.stderr
    index = json.loads((tmp_path / "two" / "suites" / "suite" / "index.json").read_text())
    (status,) = index["training"].values()
    assert status["error"] is None and Path(status["checkpoint"]).is_file()
    assert not list(Path(status["checkpoint"]).parent.glob("*-car.pth"))  # parts removed once merged


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_run_shards_the_samples_and_reports_once(tmp_path, smoke):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "ntdmbench", "run", "--model", "random", "--dataset", "pascal3d/val", "--root", str(smoke),
            "--no-progress"]
    two = _one_and_two_workers(args, env, tmp_path)
    assert two.stdout.count("results: ") == 1 and two.stdout.count("failed or missing predictions") == 1
    (config,) = (tmp_path / "two").rglob("config.yaml")
    shards = [[r["id"] for r in read_jsonl(config.parent / "predictions" / f"shard-{k:03d}.jsonl")] for k in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 3 and not set(shards[0]) & set(shards[1])
    rows = {p.parts[-1]: sorted(read_jsonl(p), key=lambda r: r["id"]) for p in (tmp_path / "one").rglob("samples.jsonl")}
    rows2 = {p.parts[-1]: sorted(read_jsonl(p), key=lambda r: r["id"]) for p in (tmp_path / "two").rglob("samples.jsonl")}
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(rows["samples.jsonl"]) == strip(rows2["samples.jsonl"])
