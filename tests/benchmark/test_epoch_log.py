"""Per-epoch training losses from the tqdm postfixes models already report, to ``CKPT.epochs.csv``."""

from __future__ import annotations

import csv

import pytest
from tqdm.auto import tqdm

from ntdmbench.benchmark import epoch_log


def _train(epochs, batches=2, start=0, desc="toy", disable=True, fail_at=None):
    """What the models' loops do: a running mean loss in the postfix after every batch."""
    with tqdm(total=epochs * batches, desc=desc, disable=disable) as bar:
        for epoch in range(start, epochs):
            total = 0.0
            for i in range(batches):
                if fail_at == (epoch, i):
                    raise FloatingPointError("loss is nan")
                total += 10.0 * (epoch + 1) + i
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{total / (i + 1):.4f}")


def _rows(path):
    return list(csv.DictReader(path.open()))


@pytest.mark.parametrize("disable", [True, False])
def test_last_postfix_of_each_epoch_is_its_row(tmp_path, disable):
    ckpt = tmp_path / "model.pth"
    with epoch_log.record_epochs(ckpt):
        _train(3, disable=disable)
    rows = _rows(tmp_path / "model.epochs.csv")
    assert [(r["stage"], r["epoch"], float(r["loss"])) for r in rows] == [("toy", "1", 10.5), ("toy", "2", 20.5),
                                                                          ("toy", "3", 30.5)]


def test_a_failed_epoch_is_not_written_and_a_resumed_run_does_not_repeat_rows(tmp_path):
    ckpt = tmp_path / "model.pth"
    with pytest.raises(FloatingPointError):
        with epoch_log.record_epochs(ckpt):
            _train(3, fail_at=(2, 1))
    assert [r["epoch"] for r in _rows(tmp_path / "model.epochs.csv")] == ["1", "2"]
    with epoch_log.record_epochs(ckpt):
        _train(3, start=1)  # resumed from the state saved after epoch 1
    assert [r["epoch"] for r in _rows(tmp_path / "model.epochs.csv")] == ["1", "2", "3"]
    assert tqdm.set_postfix is not None and not hasattr(tqdm(disable=True), "_ntdm_stage")  # tqdm restored


def test_per_category_parts_join(tmp_path):
    parts = [tmp_path / "k-car.pth", tmp_path / "k-sofa.pth"]
    for part, category in zip(parts, ("car", "sofa")):
        with epoch_log.record_epochs(part):
            _train(2, desc=f"nemo {category}")
    epoch_log.join(parts, tmp_path / "k.pth")
    rows = _rows(tmp_path / "k.epochs.csv")
    assert [(r["stage"], r["epoch"]) for r in rows] == [("nemo car", "1"), ("nemo car", "2"), ("nemo sofa", "1"),
                                                        ("nemo sofa", "2")]
    assert not any(epoch_log.log_path(p).exists() for p in parts)
