"""The run directory: append-only prediction shards, atomic result files, and the run key.

Layout (BOP's signature idea: the key names everything that changes outputs)::

    {out}/{model}/{dataset}/{run_key}/
        config.yaml          resolved configuration
        provenance.json      git commit + dirty flag, versions, device, seeds, times
        log.txt              the run's log
        predictions/shard-{rank:03d}.jsonl   one Prediction per line, flushed per batch
        samples.jsonl        per-sample errors (written by scoring)
        metrics.json         aggregates (written by scoring)

A line is only ever appended; a line cut short by a kill is dropped on read and cut off before the
next append, so a restarted run neither loses nor duplicates a sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from ntdmbench.datasets.records import Prediction


def run_key(payload: dict[str, Any]) -> str:
    """A short, stable hash of everything that changes a run's outputs."""
    canonical = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    _atomic_write(path, yaml.safe_dump(json.loads(json.dumps(obj, default=str)), sort_keys=False))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    _atomic_write(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Complete lines only: a final line without its newline was cut short and is skipped."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.endswith(b"\n") and line.strip():
                yield json.loads(line)


class ShardWriter:
    """Appends predictions to one shard and flushes after every batch."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(path)
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, predictions: Iterable[Prediction]) -> None:
        self._fh.write("".join(json.dumps(p.to_json()) + "\n" for p in predictions))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cut_torn_tail(path: Path) -> None:
    """Truncate a shard to its last complete line (what a SIGKILL mid-write leaves behind)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_run(cls, out: str | Path, model: str, dataset: str, key: str) -> "RunDir":
        return cls(Path(out) / model / dataset / key)

    @property
    def predictions_dir(self) -> Path:
        return self.path / "predictions"

    def shard(self, rank: int) -> Path:
        return self.predictions_dir / f"shard-{rank:03d}.jsonl"

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return (self.path / "config.yaml").is_file()

    def config(self) -> dict[str, Any]:
        path = self.file("config.yaml")
        if not path.is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no config.yaml)")
        return yaml.safe_load(path.read_text())

    def shards(self) -> list[Path]:
        return sorted(self.predictions_dir.glob("shard-*.jsonl"))

    def read_predictions(self) -> dict[str, Prediction]:
        """All predictions merged by id; the first record of an id wins (later ones are ignored)."""
        merged: dict[str, Prediction] = {}
        for shard in self.shards():
            for row in read_jsonl(shard):
                merged.setdefault(row["id"], Prediction.from_json(row))
        return merged

    def finished_ids(self) -> set[str]:
        return {row["id"] for shard in self.shards() for row in read_jsonl(shard)}

    def set_aside_predictions(self) -> Path | None:
        """``--fresh``: move old shards out of the way (never delete results)."""
        if not self.predictions_dir.exists():
            return None
        target = self.path / f"predictions.old-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.predictions_dir.rename(target)
        return target
