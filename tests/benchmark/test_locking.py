"""Issue 16, items 6-8: a run or suite folder is locked by its process; an interrupted data generation
resumes; Ctrl-C in `suite run` always exits 130 with the resume hint; a corrupt shard line is skipped
with a warning naming its file and line."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import toy_data
from ntdmbench.benchmark.cli import main
from ntdmbench.benchmark.distributed import Dist
from ntdmbench.benchmark.store import lock_name
from ntdmbench.benchmark.suites import data as suite_data
from ntdmbench.benchmark.suites.schema import load_suite

TESTS = Path(__file__).parents[1]

HOLD = """
import sys, time
from pathlib import Path
from ntdmbench.benchmark.store import FolderLock
with FolderLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(lock: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_on_a_run_folder_is_refused(tmp_path, capsys):
    toy_data.register(tmp_path / "data")  # n: whichever test registered it first
    argv = ["run", "--model", "oracle", "--dataset", "toy/val", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    run_dir = Path(capsys.readouterr().out.split("results: ")[1].strip())
    holder = _holder(run_dir / lock_name(0, 1))
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"ntdmbench: error: {run_dir}: in use by process {holder.pid} (another ntdmbench is "
                       f"writing here); wait for it to end or use another --out")
        assert main(["score", str(run_dir)]) == 2 and f"in use by process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main(argv) == 0  # the OS dropped the killed holder's lock


def test_a_second_process_on_a_suite_folder_is_refused(tmp_path, capsys):
    holder = _holder(tmp_path / "runs" / "suites" / "smoke" / lock_name(0, 1))
    try:
        argv = ["suite", "run", "smoke", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "runs")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ntdmbench: error: {tmp_path / 'runs' / 'suites' / 'smoke'}: in use by process "
                              f"{holder.pid}") and "\n" not in err
        assert not (tmp_path / "data").exists()  # refused before doing anything
    finally:
        holder.kill()
        holder.wait()


def test_an_interrupted_data_generation_resumes(tmp_path, monkeypatch):
    from ntdmbench.datasets.synthetic import generate as generator

    real = generator.generate

    def interrupted(out, preset, seed):
        Path(out, "pascal3d").mkdir(parents=True)  # part-way
        raise KeyboardInterrupt

    monkeypatch.setattr(generator, "generate", interrupted)
    root = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        suite_data.ensure_data(load_suite("smoke"), root, Dist(), print)
    assert not root.exists() and (tmp_path / ".data.partial").is_dir()
    monkeypatch.setattr(generator, "generate", real)
    suite_data.ensure_data(load_suite("smoke"), root, Dist(), print)
    assert (root / "synthetic.json").is_file() and not (tmp_path / ".data.partial").exists()


SLEEPY = """
    extends: smoke
    register:
      sleeper: "suite_models:Sleeper"
    models:
      sleeper: {{model: sleeper, label: Sleeper, train: false, args: {{marker: "{marker}"}}}}
    tables:
      - {{id: table3, models: [sleeper]}}
"""


def test_ctrl_c_in_suite_run_exits_130_even_when_a_model_turns_it_into_another_error(tmp_path, smoke):
    marker = tmp_path / "predicting"
    suite = tmp_path / "sleepy.yaml"
    suite.write_text(textwrap.dedent(SLEEPY.format(marker=marker)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "ntdmbench", "suite", "run", str(suite), "--root",
                             str(smoke.parent), "--out", str(tmp_path / "runs"), "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "ntdmbench: interrupted; rerun the same command to resume"
    assert "report:" not in out  # the suite did not go on as if the row had failed


def test_a_corrupt_shard_line_is_skipped_with_a_warning_and_the_run_resumes(tmp_path, capsys):
    toy_data.register(tmp_path / "data")  # n: whichever test registered it first
    argv = ["run", "--model", "oracle", "--dataset", "toy/val", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    run_dir = Path(capsys.readouterr().out.split("results: ")[1].strip())
    shard = run_dir / "predictions" / "shard-000.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    lost = json.loads(lines[2])["id"]
    lines[2] = '{"id": "boat/img_0002", "azimuth": 1.0, \x00\x00 garbage}\n'
    shard.write_text("".join(lines))
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"ntdmbench: warning: {shard}: line 3 is corrupt, skipped" in captured.err
    assert f"failed or missing predictions: 0 of {len(lines)}" in captured.out
    assert captured.err.count("is corrupt") == 1
    ids = [json.loads(line)["id"] for line in shard.read_text().splitlines()[len(lines):]]
    assert ids == [lost]  # only the sample of the corrupt line was predicted again
