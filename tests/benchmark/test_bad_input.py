"""Issue 16: every bad input ends in one line on stderr and exit code 2 (never a traceback); an internal
error keeps its traceback; NTDMBENCH_DEBUG=1 re-raises."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import toy_data
from ntdmbench.benchmark import store
from ntdmbench.benchmark.cli import main
from ntdmbench.errors import InputError, NtdmbenchError
from ntdmbench.models.reference import OraclePredictor, RandomPredictor

CUDA = torch.cuda.is_available()


def _one_line(capsys, code, argv, message):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("ntdmbench: error:") and "\n" not in err and "Traceback" not in err, err
    assert message in err, err
    return err


def _run(tmp_path, *extra):
    toy_data.register(tmp_path / "data")  # the default n: the first registration in a session wins
    return ["run", "--model", "oracle", "--dataset", "toy/val", "--out", str(tmp_path / "runs"), "--no-progress",
            *extra]


@pytest.mark.parametrize("extra, message", [
    (["--model-args", "steps=[1"], "--model-args 'steps=[1': not a YAML value"),
    (["--limit", "0"], "--limit 0: must be a positive number of samples"),
    (["--limit", "-3"], "--limit -3: must be a positive number of samples"),
    (["--batch-size", "0"], "--batch-size 0: must be a positive integer"),
    (["--device", "gpu"], "--device 'gpu': not a device"),
    pytest.param(["--device", "cuda"], "--device cuda: CUDA is not available on this machine",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    pytest.param(["--device", "cuda:7"], "--device cuda:7:", marks=pytest.mark.skipif(
        CUDA and torch.cuda.device_count() > 7, reason="this machine has a cuda:7")),
])
def test_bad_run_values(tmp_path, capsys, extra, message):
    _one_line(capsys, 2, _run(tmp_path, *extra), message)


def test_bad_checkpoints_name_the_file_and_what_it_holds(tmp_path, capsys):
    random_ckpt, truncated, foreign = tmp_path / "random.pth", tmp_path / "cut.pth", tmp_path / "foreign.pth"
    RandomPredictor().save(random_ckpt)
    truncated.write_bytes(random_ckpt.read_bytes()[:100])
    torch.save({"weights": torch.zeros(3), "epoch": 4}, foreign)
    _one_line(capsys, 2, _run(tmp_path, "--checkpoint", str(truncated)),
              f"{truncated}: not a readable checkpoint, truncated or not written by torch.save")
    _one_line(capsys, 2, _run(tmp_path, "--checkpoint", str(foreign)),
              f"{foreign}: holds a dict with keys weights, epoch, not an ntdmbench checkpoint")
    _one_line(capsys, 2, _run(tmp_path, "--checkpoint", str(random_ckpt)),
              f"{random_ckpt}: a checkpoint of model 'random', not of 'oracle'")
    OraclePredictor().save(tmp_path / "oracle.pth")
    assert main(_run(tmp_path, "--checkpoint", str(tmp_path / "oracle.pth"))) == 0


def test_an_unwritable_output_folder(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = _run(tmp_path)
    argv[argv.index("--out") + 1] = str(blocker / "runs")
    err = _one_line(capsys, 2, argv, f"{blocker / 'runs'}/oracle/toy/val/")
    assert err.endswith(f": Not a directory (writing results under {blocker / 'runs'})")

    def fail(errno_value, text):
        def write(self, predictions):
            raise OSError(errno_value, text, str(self.path))
        return write

    for code, text in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")):
        monkeypatch.setattr(store.ShardWriter, "write", fail(code, text))
        _one_line(capsys, 2, _run(tmp_path, "--fresh"), f"shard-000.jsonl: {text} (writing results under")


def test_malformed_suite_yaml_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: smoke\nmodels:\n  random: {batch_size: [1,\n")
    _one_line(capsys, 2, ["suite", "run", str(bad), "--out", str(tmp_path)], f"{bad}:4:1: malformed YAML")
    _one_line(capsys, 2, ["suite", "show", "smoke", "--set", "models.random.args={a: [1,"],
              "--set models.random.args={a: [1,: malformed YAML at column 8")
    _one_line(capsys, 2, ["suite", "run", "smoke", "--limit", "0", "--out", str(tmp_path)],
              "--limit 0: must be a positive number of samples")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_devices_this_machine_lacks(tmp_path, capsys):
    _one_line(capsys, 2, ["bench", "--model", "oracle", "--device", "cuda", "--out", str(tmp_path)],
              "--device cuda: CUDA is not available on this machine")
    _one_line(capsys, 2, ["suite", "run", "smoke", "--device", "cuda:1", "--out", str(tmp_path)],
              "--device cuda:1: CUDA is not available")
    _one_line(capsys, 2, ["train", "--model", "oracle", "--dataset", "pascal3d/train", "--device", "cuda"],
              "--device cuda: CUDA is not available")


def test_a_plugin_that_raises_on_import_names_its_entry_point(tmp_path, smoke):
    (tmp_path / "boom_plugin.py").write_text("raise RuntimeError('half-installed')\n")
    info = tmp_path / "boom_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: boom-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ntdmbench.models]\nboom = boom_plugin:Model\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "ntdmbench", "run", "--model", "boom", "--dataset", "pascal3d/val",
                          "--root", str(smoke)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == (
        "ntdmbench: error: model 'boom' could not be loaded from entry point 'boom_plugin:Model': "
        "RuntimeError: half-installed")


def test_predictions_csv_angles(tmp_path, capsys):
    gt, pred = tmp_path / "gt.csv", tmp_path / "pred.csv"
    header = "imgs,labels,azimuth,elevation,theta,distance\n"
    gt.write_text(header + "a,car,30,10,5,5\nb,car,200,-20,-3,5\n")
    pred.write_text(header + "a,car,30,10,5,5\nb,car,200,120,-3,5\n")
    _one_line(capsys, 2, ["score", "--predictions", str(pred), "--ground-truth", str(gt)],
              f"{pred}: row 3: elevation 120 is outside ±90 degrees")
    pred.write_text(header + "a,car,0.52,0.17,0.09,5\nb,car,3.49,-0.35,-0.05,5\n")
    assert main(["score", "--predictions", str(pred), "--ground-truth", str(gt)]) == 0
    assert f"warning: {pred}: every angle is within ±2π" in capsys.readouterr().err


def test_only_the_project_errors_are_one_line(tmp_path, monkeypatch):
    argv = _run(tmp_path, "--limit", "0")
    monkeypatch.setenv("NTDMBENCH_DEBUG", "1")
    with pytest.raises(InputError, match="--limit 0"):
        main(argv)
    monkeypatch.delenv("NTDMBENCH_DEBUG")
    from ntdmbench.benchmark import runner

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(runner, "run", bug)
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        main(_run(tmp_path))
    assert issubclass(InputError, NtdmbenchError) and issubclass(InputError, ValueError)
