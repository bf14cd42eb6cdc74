"""``ntdmbench bench``: latency statistics, per-stage breakdown, the batch search stopping at an
out-of-memory error, and the markdown + JSON report."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ntdmbench.benchmark.cli import main
from ntdmbench.benchmark.timing import bench, synthetic_samples, write
from ntdmbench.datasets.records import Prediction
from ntdmbench.models.reference import OraclePredictor
from ntdmbench.models.stages import stage


@dataclass
class Staged(OraclePredictor):
    """The oracle with marked stages that take known times, and out of memory above ``fits`` images."""

    name = "staged"
    features_s: float = 0.002
    optimisation_s: float = 0.030
    fits: int = 4
    steps: int = 300

    def predict(self, batch):
        if len(batch) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        with stage("features"):
            time.sleep(self.features_s * len(batch))
        with stage("optimisation"):
            time.sleep(self.optimisation_s * len(batch))
        return super().predict(batch)


def test_bench_latency_stages_and_oom_search():
    samples = synthetic_samples("car", 3, (16, 24))
    report = bench("staged", model=Staged(), samples=samples, warmup=1, iters=4, max_batch=64, progress=False)
    lat = report["latency_ms_per_image"]
    assert lat["n"] == 4 and 32 <= lat["median"] <= lat["p90"]  # sleeps only last longer under load
    stages = report["stages_ms_per_image"]
    assert list(stages) == ["features", "optimisation", "other"]
    assert 2 <= stages["features"] < stages["optimisation"] and stages["optimisation"] >= 30
    assert sum(stages.values()) == pytest.approx(lat["mean"], rel=1e-6)  # "other" closes the sum
    assert [t["batch"] for t in report["throughput"]] == [1, 2, 4]
    assert report["oom_at"] == 8 and report["max_batch_fit"] == 4 and "out of memory" in report["search_stop"]
    assert report["settings"]["steps"] == 300 and report["input"]["image_size"] == [16, 24]
    assert report["method"]["timer"] == "time.perf_counter" and report["device"]["device"] == "cpu"


def test_bench_raises_what_is_not_out_of_memory():
    @dataclass
    class Broken(OraclePredictor):
        def predict(self, batch):
            if len(batch) > 1:
                raise ValueError("shape mismatch")
            return super().predict(batch)

    with pytest.raises(ValueError, match="shape mismatch"):
        bench("broken", model=Broken(), samples=synthetic_samples("car", 2, (8, 8)), warmup=0, iters=1,
              progress=False)

    @dataclass
    class Failing(OraclePredictor):
        def predict(self, batch):
            return [Prediction(id=s.id, failure="no mesh for car") for s in batch]

    with pytest.raises(RuntimeError, match="no mesh for car"):
        bench("failing", model=Failing(), samples=synthetic_samples("car", 1, (8, 8)), warmup=1, progress=False)


def test_bench_command_writes_markdown_and_json(tmp_path, capsys):
    out = tmp_path / "timing"
    assert main(["bench", "--model", "random", "--image-size", "32x48", "--images", "2", "--warmup", "1",
                 "--iters", "3", "--max-batch", "4", "--out", str(out), "--tag", "t", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'random_cpu_t.md'}" in printed
    report = json.loads((out / "random_cpu_t.json").read_text())
    assert report["max_batch_fit"] == 4 and report["input"]["image_size"] == [32, 48]
    text = (out / "random_cpu_t.md").read_text()
    for needle in ("## Latency at batch 1", "## Throughput", "## Memory", "peak RSS", "marks no stages"):
        assert needle in text
    assert main(["bench", "--model", "random", "--image-size", "32by48", "--out", str(out)]) == 2
    assert "expected HxW" in capsys.readouterr().err
    report["device"]["gpu"] = "NVIDIA H100 80GB HBM3"
    assert write(report, out)[1].name == "random_nvidia-h100-80gb-hbm3.md"


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "reports" / "timing").glob("*.json")),
                         ids=lambda p: p.name)
def test_committed_reports_are_strict_json(path):
    # Python writes NaN / Infinity where JSON has none: jq, browsers and pandas' strict readers refuse the file
    json.loads(path.read_text(), parse_constant=_no_constant)
