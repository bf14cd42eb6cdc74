"""The run directory: keys, append-only shards that survive a torn write, atomic files, nothing deleted."""

import json

from ntdmbench.benchmark.store import RunDir, ShardWriter, read_jsonl, run_key, write_json
from ntdmbench.datasets.records import Prediction


def test_run_key_is_stable_order_free_and_sensitive_to_every_value():
    a = run_key({"model": "nemo", "args": {"steps": 30, "lr": 0.05}})
    assert a == run_key({"args": {"lr": 0.05, "steps": 30}, "model": "nemo"})
    assert a != run_key({"model": "nemo", "args": {"steps": 31, "lr": 0.05}})
    assert len(a) == 12


def test_a_torn_last_line_is_skipped_on_read_and_cut_before_the_next_append(tmp_path):
    shard = tmp_path / "predictions" / "shard-000.jsonl"
    with ShardWriter(shard) as writer:
        writer.write([Prediction(id="car/1"), Prediction(id="car/2")])
    with open(shard, "ab") as fh:
        fh.write(b'{"id": "car/3", "azim')  # a kill in the middle of a write
    assert [r["id"] for r in read_jsonl(shard)] == ["car/1", "car/2"]
    with ShardWriter(shard) as writer:
        writer.write([Prediction(id="car/3")])
    assert [json.loads(line)["id"] for line in shard.read_text().splitlines()] == ["car/1", "car/2", "car/3"]


def test_predictions_merge_over_shards_and_the_first_record_of_an_id_wins(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    with ShardWriter(run_dir.shard(0)) as writer:
        writer.write([Prediction(id="car/1", azimuth=1.0), Prediction(id="car/2", azimuth=2.0)])
    with ShardWriter(run_dir.shard(1)) as writer:
        writer.write([Prediction(id="car/1", azimuth=9.0), Prediction(id="bus/1", azimuth=3.0)])
    merged = run_dir.read_predictions()
    assert {k: p.azimuth for k, p in merged.items()} == {"car/1": 1.0, "car/2": 2.0, "bus/1": 3.0}
    assert run_dir.finished_ids() == {"car/1", "car/2", "bus/1"}


def test_fresh_sets_old_predictions_aside_and_deletes_nothing(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    assert run_dir.set_aside_predictions() is None
    with ShardWriter(run_dir.shard(0)) as writer:
        writer.write([Prediction(id="car/1")])
    moved = run_dir.set_aside_predictions()
    assert not run_dir.predictions_dir.exists() and run_dir.finished_ids() == set()
    assert [r["id"] for r in read_jsonl(moved / "shard-000.jsonl")] == ["car/1"]


def test_json_files_are_written_whole(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"n": 3})
    write_json(path, {"n": 4})
    assert json.loads(path.read_text()) == {"n": 4}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind
