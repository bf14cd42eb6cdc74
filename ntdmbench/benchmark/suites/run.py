"""A suite run: its stages in order (data, training, prediction and scoring), recorded in ``index.json``.

Each stage is resumable: data is generated once, checkpoints are cached, run directories skip finished
ids. A model that cannot be built, trained or run is recorded and the suite goes on. The report is
written from ``index.json`` afterwards (``ntdmbench suite run`` does it; ``reports/report.py``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ntdmbench.benchmark import provenance
from ntdmbench.benchmark.device import check_device
from ntdmbench.benchmark.distributed import Dist, init_from_env
from ntdmbench.benchmark.suites import prediction, training
from ntdmbench.benchmark.suites.data import default_root, ensure_data
from ntdmbench.benchmark.suites.index import Failure, SuiteIndex, TableEntry
from ntdmbench.benchmark.store import FolderLock, lock_name, writing_to
from ntdmbench.benchmark.suites.schema import Suite, load_suite
from ntdmbench.errors import InputError


@dataclass
class SuiteRun:
    """Where a suite run reads and writes, and what it has recorded so far."""

    suite: Suite
    out: Path
    root: Path | None
    device: str
    dist: Dist
    index: SuiteIndex
    limit: int | None = None
    progress: bool = True

    @property
    def dir(self) -> Path:
        return self.out / "suites" / self.suite.name

    def log(self, message: str) -> None:
        if self.dist.is_main:
            print(f"[suite {self.suite.name}] {message}", file=sys.stderr, flush=True)

    def fail(self, row: str, stage: str, error: str, table: str | None = None, condition: str | None = None) -> None:
        self.index.failures.append(Failure(row=row, stage=stage, error=error, table=table, condition=condition))
        where = "/".join(x for x in (table, row, condition) if x)
        self.log(f"FAILED {stage} {where}: {error}")

    def execute(self) -> None:
        """Every stage; on rank 0 the suite folder then holds ``suite.yaml``, ``index.json`` and the results."""
        t0 = time.perf_counter()
        if self.dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "suite.yaml").write_text(yaml.safe_dump(self.suite.raw, sort_keys=False))
        self.index.timing_s["data"] = ensure_data(self.suite, self.root, self.dist, self.log)
        t1 = time.perf_counter()
        trained = training.train_all(self)
        self.index.timing_s["training"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        prediction.predict_all(self, trained)
        self.index.timing_s["prediction"] = time.perf_counter() - t2
        self.dist.barrier()
        if not self.dist.is_main:
            return
        self.index.provenance = provenance.collect(self.device, self.suite.seed)
        self.index.timing_s["total_before_report"] = time.perf_counter() - t0
        self.index.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.index.write(self.dir)


def new_index(suite: Suite, root: Path | None, out: Path, device: str, dist: Dist, limit: int | None) -> SuiteIndex:
    index = SuiteIndex(suite=suite.name, title=suite.title, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       root=str(root) if root else None, out=str(out), device=device, world_size=dist.world,
                       limit=limit)
    for order, t in enumerate(suite.tables):
        index.tables[t.id] = TableEntry(id=t.id, title=t.title, benchmark=t.benchmark, conditions=list(t.conditions),
                                        datasets=t.conditions, metrics=t.metrics, order=order, clean=t.clean,
                                        mean=t.mean, categories=t.categories, layout=t.layout, train=t.train,
                                        columns=t.columns, labels=t.labels)
    return index


def run_suite(ref: str, root: str | None = None, out: str = "runs", device: str = "cpu",
              overrides: list[str] | None = None, tables: list[str] | None = None, models: list[str] | None = None,
              limit: int | None = None, progress: bool = True) -> SuiteRun:
    """Run a suite end to end (under torchrun: this rank's part); the report is the caller's to write.

    The suite folder is locked for the run (one lock per rank), so a second process on it is refused.
    """
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: must be a positive number of samples")
    check_device(device)
    suite = load_suite(ref, overrides, tables, models)
    dist, device = init_from_env(device)
    try:
        root_path = Path(root) if root else default_root(suite)
        index = new_index(suite, root_path, Path(out), device, dist, limit)
        suite_run = SuiteRun(suite, Path(out), root_path, device, dist, index, limit=limit, progress=progress)
        with writing_to(Path(out)), FolderLock(suite_run.dir / lock_name(dist.rank, dist.world)):
            suite_run.execute()
        return suite_run
    finally:
        dist.close()
