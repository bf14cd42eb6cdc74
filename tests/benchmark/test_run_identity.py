"""Issue 16, items 1-2: a run's key covers everything that changes its result (limit, categories, device
kind, code, checkpoint content) and names the data by content, never by the path it was read from."""

import hashlib
import importlib
import json
import os
import shutil
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ntdmbench.benchmark import provenance
from ntdmbench.benchmark.cli import main
from ntdmbench.benchmark.runner import RunConfig, run, run_identity
from ntdmbench.benchmark.store import RunDir, run_key
from ntdmbench.datasets.catalog import load_dataset
from ntdmbench.models.predictor import BasePredictor, sha256_file
from ntdmbench.models.reference import OraclePredictor


def _run(root, out, **kw):
    cfg = RunConfig(model="oracle", dataset="pascal3d/val", root=str(root), out=str(out), progress=False, **kw)
    return run(cfg)


def test_limit_and_categories_each_get_their_own_run_and_are_recorded(smoke, tmp_path):
    full = _run(smoke, tmp_path)
    limited = _run(smoke, tmp_path, limit=2)
    sofas = _run(smoke, tmp_path, categories=["sofa"])
    assert len({full.run_dir.path, limited.run_dir.path, sofas.run_dir.path}) == 3
    assert (full.metrics["n"], limited.metrics["n"], sofas.metrics["n"]) == (6, 2, 3)
    saved = json.loads(limited.run_dir.file("metrics.json").read_text())
    assert saved["limit"] == 2 and saved["categories"] is None and saved["n"] == 2
    assert json.loads(sofas.run_dir.file("metrics.json").read_text())["categories"] == ["sofa"]
    assert json.loads(full.run_dir.file("metrics.json").read_text())["n"] == 6  # untouched by the others


def test_the_key_names_data_by_content_not_by_path(smoke, tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere" / "pascal3d"  # the same files under another mount point
    shutil.copytree(smoke, copy)
    absolute = _run(smoke, tmp_path / "runs")
    monkeypatch.chdir(smoke.parent)
    relative = _run(Path(smoke.name), tmp_path / "runs")
    moved = _run(copy, tmp_path / "runs")
    assert absolute.run_dir.path == relative.run_dir.path == moved.run_dir.path
    assert len(absolute.run_dir.read_predictions()) == 6  # nothing predicted twice
    # the root is stored resolved, so `score RUN` works from any folder
    config = absolute.run_dir.config()
    assert Path(config["root"]).is_absolute()
    monkeypatch.chdir(tmp_path)
    assert main(["score", str(relative.run_dir.path)]) == 0


def test_device_kind_and_code_are_in_the_key(smoke):
    dataset, model = load_dataset("pascal3d/val", smoke), OraclePredictor()

    def key(**kw):
        return run_key(run_identity(RunConfig(model="oracle", dataset="pascal3d/val", **kw), model, dataset))

    assert key(device="cuda:0") == key(device="cuda:1") != key(device="cpu")
    code = provenance.code_identity(model)
    assert code["ntdmbench"] and "model_source_sha256" not in code  # a built-in model: version and commit


def test_an_edited_plugin_gets_a_new_key(tmp_path, monkeypatch):
    module = tmp_path / "my_plugin.py"
    source = textwrap.dedent("""
        from dataclasses import dataclass
        from ntdmbench.models.reference import OraclePredictor

        @dataclass
        class Plugin(OraclePredictor):
            name = "plugin"
            # version {v}
    """)
    module.write_text(source.format(v=1))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = importlib.import_module("my_plugin")
    before = provenance.code_identity(plugin.Plugin())["model_source_sha256"]
    module.write_text(source.format(v=2))  # edited and reinstalled
    plugin = importlib.reload(plugin)
    after = provenance.code_identity(plugin.Plugin())["model_source_sha256"]
    assert before != after
    sys.modules.pop("my_plugin", None)


@dataclass
class Weights(BasePredictor):
    name = "weights"
    tensors: dict = field(default_factory=lambda: {"w": torch.arange(6.0).reshape(2, 3)})

    def config(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return dict(self.tensors)

    def load_state_dict(self, state: dict) -> None:
        self.tensors = dict(state)


def test_checkpoint_hash_covers_the_tensors_not_the_file_name(tmp_path):
    model = Weights()
    a = model.save(tmp_path / "a.pth")
    b = model.save(tmp_path / "sub" / "another-name.pth")
    assert a == b == sha256_file(tmp_path / "a.pth")
    raw = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "a.pth", tmp_path / "sub" / "another-name.pth")]
    assert raw[0] != raw[1]  # the bytes differ: torch.save embeds the file name
    loaded = Weights(tensors={})
    loaded.load(tmp_path / "sub" / "another-name.pth")
    assert loaded.checkpoint_sha256 == a
    model.tensors["w"][0, 0] = 1.0
    assert model.save(tmp_path / "a.pth") != a
