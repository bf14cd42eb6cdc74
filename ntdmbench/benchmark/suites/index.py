"""``index.json``: what a suite run recorded, typed; the suite writes it and the reports read it.

One structure for both sides, so a field is named once. Reading tolerates fields a newer or older
writer left out (they take their defaults).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ntdmbench.benchmark.store import write_json
from ntdmbench.errors import MissingFileError

INDEX = "index.json"

T = TypeVar("T")


def _known(cls: type[T], data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class ConditionResult:
    """One condition's run of one row: the shared run directory and the suite's copies of its results."""

    metrics: str  # metrics.json, relative to the suite folder
    samples: str  # samples.jsonl, relative to the suite folder
    run_dir: str = ""
    wall_s: float = 0.0


@dataclass
class RowEntry:
    """A table row: the model, its arguments, its status (ok, partial, failed) and its results."""

    id: str
    label: str
    model: str
    args: dict[str, Any] = field(default_factory=dict)
    eval_args: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    results: dict[str, ConditionResult] = field(default_factory=dict)
    describe: dict[str, Any] | None = None
    capabilities: list[str] | None = None  # None: unknown (the model could not be built)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RowEntry":
        row = cls(**_known(cls, data))
        row.results = {c: ConditionResult(**_known(ConditionResult, r)) for c, r in (data.get("results") or {}).items()}
        return row


@dataclass
class TableEntry:
    """A table as the suite defined it, and its rows."""

    id: str
    title: str
    benchmark: str
    conditions: list[str]
    metrics: list[str]
    datasets: dict[str, str] = field(default_factory=dict)
    order: int = 0
    clean: str | None = None
    mean: list[str] | None = None
    categories: list[str] | None = None
    layout: str = "wide"
    columns: dict[str, list[str]] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    train: str | None = None
    rows: list[RowEntry] = field(default_factory=list)

    @classmethod
    def from_json(cls, table_id: str, data: dict[str, Any]) -> "TableEntry":
        table = cls(**{**_known(cls, data), "id": table_id})
        table.rows = [RowEntry.from_json(r) for r in data.get("rows", [])]
        return table


@dataclass
class TrainingStatus:
    """The checkpoint one row trained (or found cached) on one training set."""

    row: str
    model: str
    dataset: str
    key: str
    checkpoint: str
    cached: bool
    seconds: float
    error: str | None = None
    sha256: str | None = None


@dataclass
class Failure:
    """A row that could not be trained, built or run on a condition; its cells show as missing."""

    row: str
    stage: str
    error: str
    table: str | None = None
    condition: str | None = None


def describe_error(exc: BaseException) -> str:
    """A failure's error text: the exception's type and message, on one line."""
    return f"{type(exc).__name__}: {exc}"


@dataclass
class SuiteIndex:
    suite: str
    title: str
    started: str = ""
    root: str | None = None
    out: str = ""
    device: str = "cpu"
    world_size: int = 1
    limit: int | None = None
    tables: dict[str, TableEntry] = field(default_factory=dict)
    training: dict[str, TrainingStatus] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    timing_s: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    finished: str | None = None

    def ordered_tables(self) -> list[TableEntry]:
        """The tables in suite order (JSON objects are written with sorted keys)."""
        return sorted(self.tables.values(), key=lambda t: t.order)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for table in data["tables"].values():
            del table["id"]  # the key of the mapping
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SuiteIndex":
        index = cls(**_known(cls, data))
        index.tables = {tid: TableEntry.from_json(tid, t) for tid, t in data.get("tables", {}).items()}
        index.training = {k: TrainingStatus(**_known(TrainingStatus, s)) for k, s in data.get("training", {}).items()}
        index.failures = [Failure(**_known(Failure, f)) for f in data.get("failures", [])]
        return index

    def write(self, folder: Path) -> None:
        write_json(folder / INDEX, self.to_json())

    @classmethod
    def read(cls, folder: str | Path) -> "SuiteIndex":
        path = Path(folder) / INDEX
        if not path.is_file():
            raise MissingFileError(f"{folder}: not a suite run directory (no {INDEX}); run `ntdmbench suite run` first")
        return cls.from_json(json.loads(path.read_text()))
