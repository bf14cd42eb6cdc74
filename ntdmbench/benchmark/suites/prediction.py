"""The suite's prediction stage: every row on every condition of its tables, through ``ntdmbench run``'s
resumable run directories, with each result copied into the suite folder.

A line per job says where the suite stands (``[7/24 jobs, ETA 3m10s]``) and how the job ended: a run
whose predictions were all there already is reported as reused, not as a run of zero images."""

from __future__ import annotations

import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ntdmbench.benchmark.interrupt import reraise_if_interrupted
from ntdmbench.benchmark.runner import RunConfig, RunResult, run
from ntdmbench.benchmark.store import write_json
from ntdmbench.benchmark.suites.data import dataset_root
from ntdmbench.benchmark.suites.index import ConditionResult, RowEntry, TrainingStatus, describe_error
from ntdmbench.models.registry import build_model

if TYPE_CHECKING:
    from ntdmbench.benchmark.suites.run import SuiteRun


@dataclass
class Progress:
    """Jobs done of the total, and an ETA from the mean time of the jobs that had to predict."""

    total: int
    done: int = 0
    predicting_s: list[float] = field(default_factory=list)

    def line(self) -> str:
        left = self.total - self.done
        eta = format_duration(left * sum(self.predicting_s) / len(self.predicting_s)) if self.predicting_s else "?"
        return f"[{self.done}/{self.total} jobs, ETA {eta if left else '0s'}]"


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _shard_bytes(run_dir: Path) -> int:
    return sum(p.stat().st_size for p in run_dir.glob("predictions/shard-*.jsonl"))


def _before(out: Path, model: str, dataset: str) -> dict[Path, int]:
    """The prediction bytes of every run directory of this model and dataset, before a job runs."""
    return {d: _shard_bytes(d) for d in (out / model / dataset).glob("*") if d.is_dir()}


def predict_all(suite_run: SuiteRun, training: dict[tuple[str, str], TrainingStatus]) -> None:
    """Fill each table's rows in ``suite_run.index``; a row that cannot be built or run is a failure."""
    suite, index = suite_run.suite, suite_run.index
    progress = Progress(sum(len(t.models) * len(t.conditions) for t in suite.tables))
    for table in suite.tables:
        for row_id in table.models:
            row = suite.rows[row_id]
            entry = RowEntry(id=row.id, label=row.label, model=row.model, args=row.args, eval_args=row.eval_args)
            index.tables[table.id].rows.append(entry)
            checkpoint = None
            if row.train:
                status = training[(row_id, table.train)]
                index.training.setdefault(f"{row_id}@{table.train}", status)
                if status.error:
                    entry.status = "failed"
                    suite_run.fail(row_id, "train", status.error, table.id)
                    progress.done += len(table.conditions)
                    continue
                checkpoint = status.checkpoint
            model_args = {**row.args, **row.eval_args}
            try:
                model = build_model(row.model, model_args, device=suite_run.device, checkpoint=checkpoint)
            except Exception as exc:  # noqa: BLE001
                reraise_if_interrupted()
                entry.status = "failed"
                suite_run.fail(row_id, "build", describe_error(exc), table.id)
                progress.done += len(table.conditions)
                continue
            entry.describe = model.describe()
            entry.capabilities = entry.describe.get("capabilities")
            for cond, dataset in table.conditions.items():
                cfg = RunConfig(model=row.model, dataset=dataset, root=dataset_root(suite, dataset, suite_run.root),
                                out=str(suite_run.out), batch_size=row.batch_size, device=suite_run.device,
                                seed=suite.seed, checkpoint=checkpoint, model_args=model_args, limit=suite_run.limit,
                                categories=table.categories, progress=suite_run.progress and suite_run.dist.is_main)
                job = f"{table.id}: {row.label} on {cond} ({dataset})"
                suite_run.log(f"{progress.line()} {job}")
                before = _before(suite_run.out, row.model, dataset)
                start = time.perf_counter()
                try:
                    result = run(cfg, suite_run.dist.rank, suite_run.dist.world, model=model)
                except Exception as exc:  # noqa: BLE001
                    reraise_if_interrupted()
                    entry.status = "partial"
                    suite_run.fail(row_id, "predict", describe_error(exc), table.id, cond)
                    if suite_run.dist.is_main and os.environ.get("NTDMBENCH_DEBUG"):
                        traceback.print_exc()
                    progress.done += 1
                    continue
                seconds = time.perf_counter() - start
                progress.done += 1
                path = result.run_dir.path
                if before.get(path, -1) == _shard_bytes(path) > 0:
                    suite_run.log(f"{progress.line()} {job}: reused, all {result.metrics.get('n', '?')} samples "
                                  f"were already predicted in {path}")
                else:
                    progress.predicting_s.append(seconds)
                    suite_run.log(f"{progress.line()} {job}: {result.metrics.get('n', '?')} samples scored in "
                                  f"{format_duration(seconds)}")
                if suite_run.dist.is_main:
                    entry.results[cond] = _keep(suite_run, table.id, row_id, cond, result, seconds)


def _keep(suite_run: SuiteRun, table: str, row: str, cond: str, result: RunResult, seconds: float) -> ConditionResult:
    """Copy a run's metrics and per-sample rows into the suite (run dirs are shared between tables)."""
    folder = suite_run.dir / "results" / table / row / cond
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "metrics.json", result.metrics)
    shutil.copyfile(result.run_dir.file("samples.jsonl"), folder / "samples.jsonl")
    return ConditionResult(run_dir=str(result.run_dir.path),
                           metrics=str((folder / "metrics.json").relative_to(suite_run.dir)),
                           samples=str((folder / "samples.jsonl").relative_to(suite_run.dir)), wall_s=seconds)
