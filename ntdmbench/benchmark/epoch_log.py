"""Training losses per epoch, saved to a CSV beside the checkpoint (``CKPT.epochs.csv``).

Every model already reports its progress the same way: a tqdm bar whose postfix carries ``epoch``
(``3`` or ``3/10``) and the running mean ``loss`` (``baselines/sgd_loop.py``, NeMo, NTDM). While
``ntdmbench train`` (or a suite's training stage) runs, ``record_epochs`` listens to those postfixes,
so no model has to change: the last postfix of an epoch is that epoch's mean loss. A row is written
when the next epoch starts and, for the last epoch, when training returns; an epoch cut short by a
kill or an error is not written. Rows are keyed by (stage, epoch), the stage being the bar's
description (``nemo car``), so a resumed training rewrites the epochs it repeats instead of adding
them twice.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import std

COLUMNS = ("stage", "epoch")


def log_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".epochs.csv")


def _epoch(value: Any) -> int | None:
    try:
        return int(str(value).split("/")[0])
    except ValueError:
        return None


def _number(value: Any) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class EpochLog:
    """The rows recorded so far (read back from an earlier, resumed training), written as one CSV."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        self.pending: dict[str, dict[str, Any]] = {}  # stage -> its latest postfix, epoch not finished yet
        if path.is_file():
            for row in csv.DictReader(io.StringIO(path.read_text())):
                self.rows[(row["stage"], int(row["epoch"]))] = row

    def report(self, stage: str, postfix: dict[str, Any]) -> None:
        epoch = _epoch(postfix.get("epoch"))
        if epoch is None:
            return
        last = self.pending.get(stage)
        if last is not None and last["epoch"] != epoch:
            self._commit(stage)
        self.pending[stage] = {"stage": stage, "epoch": epoch,
                               **{k: _number(v) for k, v in postfix.items() if k != "epoch"}}

    def finish(self) -> None:
        for stage in list(self.pending):
            self._commit(stage)

    def _commit(self, stage: str) -> None:
        row = self.pending.pop(stage)
        self.rows[(row["stage"], row["epoch"])] = row
        self.write()

    def write(self) -> None:
        fields = list(COLUMNS) + sorted({k for r in self.rows.values() for k in r} - set(COLUMNS))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows[k] for k in sorted(self.rows))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(self.path)


@contextmanager
def record_epochs(checkpoint: str | Path) -> Iterator[EpochLog]:
    """Record every tqdm postfix with an ``epoch`` while the block runs (progress bar shown or not)."""
    log = EpochLog(log_path(checkpoint))
    original_init, original_postfix = std.tqdm.__init__, std.tqdm.set_postfix

    def init(bar, *args, **kwargs) -> None:
        original_init(bar, *args, **kwargs)
        bar._ntdm_stage = str(kwargs.get("desc") or (args[1] if len(args) > 1 else "") or "train")

    def set_postfix(bar, ordered_dict=None, refresh=True, **kwargs) -> None:
        log.report(getattr(bar, "_ntdm_stage", "train"), {**(ordered_dict or {}), **kwargs})
        original_postfix(bar, ordered_dict, refresh, **kwargs)

    std.tqdm.__init__, std.tqdm.set_postfix = init, set_postfix
    try:
        yield log
        log.finish()
    finally:
        std.tqdm.__init__, std.tqdm.set_postfix = original_init, original_postfix


def join(parts: list[Path], checkpoint: str | Path) -> None:
    """The per-category parts' logs (a ``per_category`` suite row) as one log beside the joined checkpoint."""
    log = EpochLog(log_path(checkpoint))
    for part in (log_path(p) for p in parts):
        if part.is_file():
            log.rows.update(EpochLog(part).rows)
            part.unlink()
    if log.rows:
        log.write()
