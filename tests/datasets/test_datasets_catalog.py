"""Catalog roots (flag or env var), ``validate`` against manifests and published counts, and the CLI."""

import argparse

import pytest

from dataset_fixtures import nemo_root, obj, occluded_level, raw_release, viewpoint
from ntdmbench.datasets import cli
from ntdmbench.datasets.catalog import DATASETS, load_dataset
from ntdmbench.datasets.records import DataError


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ntdmbench")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_catalog_names_roots_and_env(tmp_path, monkeypatch):
    assert {"pascal3d/val", "pascal3d/train", "occluded-pascal3d/val/L3", "oodcv/test/weather", "oodcv/train",
            "pascal3d-raw/val", "occluded-pascal3d-raw/val/L1", "oodcv-raw/test/shape"} <= set(DATASETS.names())
    for var in ("NTDMBENCH_OCCLUDED_PASCAL3D", "NTDMBENCH_PASCAL3D"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(DataError, match="no root; pass --root DIR or set NTDMBENCH_OCCLUDED_PASCAL3D or "
                                        "NTDMBENCH_PASCAL3D"):
        load_dataset("occluded-pascal3d/val/L1")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_dataset("pascal3d/val", tmp_path / "nope")
    nemo_root(tmp_path, {"car/a_00": {}}, pendix="FGL2_BGL2")
    monkeypatch.setenv("NTDMBENCH_PASCAL3D", str(tmp_path))
    ds = load_dataset("occluded-pascal3d/val/L2")
    assert ds.ids() == ["car/a_00"] and ds.name == "occluded-pascal3d/val/L2" and ds.version == "NemoDataset/1"
    assert ds.load("car/a_00").tags == {"dataset": "occluded-pascal3d", "split": "val", "level": "L2"}
    nemo_root(tmp_path / "ood", {"car/b_00": {"nuisance": "pose"}})
    assert load_dataset("oodcv/test/pose", tmp_path / "ood").load("car/b_00").tags["split"] == "test"


def test_prepare_then_validate_against_the_written_manifest(tmp_path, capsys):
    raw = raw_release(tmp_path / "PASCAL3D+_release1.1", {"n01": [obj()], "n02": [obj(view=viewpoint(distance=0))]})
    occluded_level(tmp_path / "OccludedPASCAL3D", ["n01"], level=1)
    out = tmp_path / "PASCAL3D_NeMo"
    assert run("data", "prepare", "pascal3d", "--raw-root", str(raw), "--out", str(out), "--levels", "0", "1",
               "--occluded-root", str(tmp_path / "OccludedPASCAL3D"), "--categories", "car") == 0
    assert "pascal3d/val: 1 samples" in capsys.readouterr().out
    assert run("validate", "pascal3d/val", "--root", str(out)) == 0
    assert "pascal3d/val at" in capsys.readouterr().out
    assert run("validate", "occluded-pascal3d/val/L1", "--root", str(out)) == 0
    (out / "val/annotations/car/n01_00.npz").write_bytes(b"PK\x03\x04 truncated")
    (out / "val/annotations/Car").mkdir()
    assert run("validate", "pascal3d/val", "--root", str(out)) == 1
    text = capsys.readouterr().out
    assert "problem: " + str(out / "val/annotations/car/n01_00.npz") + ": unreadable or truncated npz" in text
    assert "problem: " + str(out / "val/annotations/Car") + ": unexpected folder" in text
    assert f"problem: {out}/manifest.json: expects 1 for pascal3d/val, found 0" in text
    assert "lists n01_00" not in text  # the list entry's file exists, it is just unreadable


def test_validate_raw_against_published_counts(tmp_path, capsys):
    raw = raw_release(tmp_path / "PASCAL3D+_release1.1", {"n01": [obj()], "n02": [obj(view=viewpoint(distance=0))]})
    assert run("validate", "pascal3d-raw/val", "--root", str(raw)) == 1
    text = capsys.readouterr().out
    assert f"problem: {raw}: 2 images listed for pascal3d-raw/val, published 10812" in text
    assert "note: " + str(raw / "Annotations/car_imagenet/n02.mat") + ": object 0: distance 0" in text
    (tmp_path / "m.json").write_text('{"format": "ntdmbench-manifest/1", "counts": {"pascal3d-raw/val": 2}}')
    assert run("validate", "pascal3d-raw/val", "--root", str(raw), "--manifest", str(tmp_path / "m.json")) == 0
    assert run("validate", "pascal3d/val", "--root", str(raw)) == 1
    assert "no val/annotations/ folder" in capsys.readouterr().out
