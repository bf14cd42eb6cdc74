"""Issue 16, items 3-4: a failed sample is retried by a rerun (unless --keep-failures); a run where every
sample failed, or with no samples, exits non-zero with one line; an unusable annotation is a counted
failure in stdout, log.txt and metrics.json."""

import json
import shutil
import zipfile
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import toy_data
from ntdmbench.benchmark.cli import main
from ntdmbench.benchmark.runner import RunConfig, run
from ntdmbench.errors import RunFailedError
from ntdmbench.models.reference import OraclePredictor


@dataclass
class Moody(OraclePredictor):
    """The oracle, failing on the ids in ``broken`` (a class attribute: not part of its description)."""

    name = "moody"
    broken: ClassVar[set[str]] = set()

    def predict(self, batch):
        for s in batch:
            if s.id in self.broken:
                raise RuntimeError(f"cannot handle {s.id}")
        return super().predict(batch)


def test_a_rerun_retries_failed_samples_unless_told_to_keep_them(tmp_path):
    ds = toy_data.toy_dataset(tmp_path / "data", n=10)
    cfg = RunConfig(model="moody", dataset="toy/val", out=str(tmp_path / "runs"), batch_size=3, progress=False)
    Moody.broken = {ds.ids()[1], ds.ids()[7]}
    first = run(cfg, dataset=ds, model=Moody())
    assert first.metrics["n_failed"] == 2
    Moody.broken = set()
    cfg.keep_failures = True
    kept = run(cfg, dataset=ds, model=Moody())
    assert kept.run_dir.path == first.run_dir.path and kept.metrics["n_failed"] == 2
    cfg.keep_failures = False
    retried = run(cfg, dataset=ds, model=Moody())
    assert retried.metrics["n_failed"] == 0 and retried.metrics["acc_pi18"] == 100.0
    lines = [json.loads(line) for line in retried.run_dir.shard(0).read_text().splitlines()]
    assert len(lines) == 12 and sum(bool(r["failure"]) for r in lines) == 2  # appended, never rewritten


def test_every_sample_failing_is_an_error_and_is_retried(tmp_path, capsys):
    toy_data.register(tmp_path / "data")
    argv = ["run", "--model", "moody", "--dataset", "toy/val", "--out", str(tmp_path / "runs"), "--no-progress"]
    from ntdmbench.models.registry import MODELS

    if "moody" not in MODELS:
        MODELS.register("moody", Moody)
    from ntdmbench.datasets.catalog import load_dataset

    ids = load_dataset("toy/val").ids()  # registered once per session, by whichever test came first
    Moody.broken = set(ids)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"ntdmbench: error: all {len(ids)} samples failed (first: RuntimeError: cannot handle "
                       f"{ids[0]}); nothing to report from {err[-1].split('nothing to report from ')[1]}")
    assert err[-1].endswith("; a rerun retries them")
    Moody.broken = set()
    assert main(argv) == 0  # the failures were not taken as finished
    assert f"failed or missing predictions: 0 of {len(ids)}" in capsys.readouterr().out


def test_no_samples_is_an_error(smoke, tmp_path, capsys):
    ds = toy_data.toy_dataset(tmp_path / "data", n=4)
    cfg = RunConfig(model="oracle", dataset="toy/val", out=str(tmp_path / "runs"), categories=["tvmonitor"],
                    progress=False)
    with pytest.raises(RunFailedError, match="no samples of categories tvmonitor to predict"):
        run(cfg, dataset=ds, model=OraclePredictor())


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_key(path, key):
    with np.load(path, allow_pickle=True) as z:
        fields = {k: z[k] for k in z.files if k != key}
    np.savez(path, **fields)


def test_unusable_annotations_are_counted_failures(smoke, tmp_path, capsys):
    root = tmp_path / "pascal3d"
    shutil.copytree(smoke, root)
    npz = sorted((root / "val" / "annotations").glob("*/*.npz"))
    npz = [p for p in npz if p.parent.name in ("car", "sofa")]  # the clean level
    _truncate(npz[0])                     # truncated
    _drop_key(npz[1], "azimuth")          # incomplete
    npz[3].unlink()                       # an image without annotation
    with pytest.raises(zipfile.BadZipFile):
        np.load(npz[0])
    argv = ["run", "--model", "oracle", "--dataset", "pascal3d/val", "--root", str(root), "--out",
            str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "failed or missing predictions: 3 of 6" in out and "unusable samples" in out and ": 3;" in out
    run_dir = tmp_path / "runs" / out.split("results: ")[1].strip().removeprefix(str(tmp_path / "runs") + "/")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["n"], metrics["n_failed"], metrics["n_unusable"]) == (6, 3, 3)
    assert metrics["acc_pi18"] == 50.0  # the unusable half scored as misses, never dropped
    log = (run_dir / "log.txt").read_text()
    for path, why in ((npz[0], "unreadable or truncated npz"), (npz[1], "missing key(s) azimuth")):
        assert f"{path}: {why}" in log
    assert "image without annotation" in log
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in rows) == ["ok"] * 3 + ["unusable"] * 3
