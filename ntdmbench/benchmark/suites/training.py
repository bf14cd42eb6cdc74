"""The suite's training stage: one checkpoint per distinct (model, args, training set, seed), cached under
``OUT/checkpoints`` and spread over ranks; per-category jobs are joined by the model's ``merge``."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntdmbench.benchmark import epoch_log
from ntdmbench.benchmark.distributed import spread
from ntdmbench.benchmark.interrupt import reraise_if_interrupted
from ntdmbench.benchmark.store import run_key, write_json
from ntdmbench.benchmark.suites.data import dataset_root
from ntdmbench.benchmark.suites.index import TrainingStatus, describe_error
from ntdmbench.benchmark.suites.schema import SuiteError

if TYPE_CHECKING:
    from ntdmbench.benchmark.suites.run import SuiteRun

CHECKPOINT_FORMAT = 1  # bump to retrain every cached checkpoint


@dataclass
class TrainJob:
    """One checkpoint to make: a model with its args on a training set (one category or all)."""

    model: str
    args: dict[str, Any]
    dataset: str
    root: str | None
    key: str
    checkpoint: str
    category: str = "all"
    per_category: bool = False


def _without_defaults(model: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` less those equal to the model's own defaults, so that spelling a default out (e.g. a
    row undoing a parent suite's switch) still shares the checkpoint."""
    from ntdmbench.models.registry import MODELS

    try:
        factory = MODELS.get(model)
    except Exception:  # noqa: BLE001 - a model that fails to import is reported when it trains
        return args
    if not dataclasses.is_dataclass(factory):
        return args
    defaults = {f.name: f.default for f in dataclasses.fields(factory) if f.default is not dataclasses.MISSING}
    return {k: v for k, v in args.items() if k not in defaults or defaults[k] != v}


def training_key(model: str, args: dict[str, Any], dataset_describe: dict[str, Any], seed: int) -> str:
    return run_key({"format": CHECKPOINT_FORMAT, "model": model, "args": _without_defaults(model, args),
                    "dataset": dataset_describe, "seed": seed})


def _train_one(job: TrainJob, device: str, seed: int, progress: bool) -> dict[str, Any]:
    from ntdmbench.benchmark.train import train

    start = time.perf_counter()
    try:
        _, sha = train(job.model, job.dataset, job.root, job.category, job.checkpoint, device, seed,
                       job.args, progress=progress)
    except Exception as exc:  # noqa: BLE001 - one model's failure is recorded, the suite goes on
        reraise_if_interrupted()
        return {"key": job.key, "category": job.category, "error": describe_error(exc),
                "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    return {"key": job.key, "category": job.category, "sha256": sha, "seconds": seconds}


def _merge(job: TrainJob, parts: list[str], device: str) -> None:
    """Join per-category checkpoints into the job's checkpoint with the model's ``merge``; the parts
    are removed once the joined checkpoint is written (until then they are what a rerun resumes from);
    their per-epoch loss logs become one."""
    from ntdmbench.models.registry import build_model

    model = build_model(job.model, job.args, device=device)
    merge = getattr(model, "merge", None)
    if merge is None:
        raise SuiteError(f"model {job.model!r} has no merge(paths); it cannot train with per_category: true")
    merge([Path(p) for p in parts])
    model.save(job.checkpoint)
    epoch_log.join([Path(p) for p in parts], job.checkpoint)
    for p in parts:
        Path(p).unlink(missing_ok=True)


def plan(run: SuiteRun) -> dict[tuple[str, str], TrainJob]:
    """One job per distinct (row, training set); rows with identical model and args share it."""
    from ntdmbench.datasets.catalog import load_dataset

    jobs: dict[tuple[str, str], TrainJob] = {}
    describes: dict[str, dict[str, Any]] = {}
    for table in run.suite.tables:
        for row_id in table.models:
            row = run.suite.rows[row_id]
            if not row.train or (row_id, table.train) in jobs:
                continue
            root = dataset_root(run.suite, table.train, run.root)
            if table.train not in describes:
                describes[table.train] = load_dataset(table.train, root).identity()  # content, not path
            key = training_key(row.model, row.args, describes[table.train], run.suite.seed)
            path = run.out / "checkpoints" / row.model / f"{key}.pth"
            jobs[(row_id, table.train)] = TrainJob(row.model, row.args, table.train, root, key, str(path),
                                                   per_category=row.per_category)
    return jobs


def train_all(run: SuiteRun) -> dict[tuple[str, str], TrainingStatus]:
    """Train what has no checkpoint yet, spread over ranks; returns each (row, set)'s outcome."""
    from ntdmbench.benchmark.train import resolve_categories
    from ntdmbench.datasets.catalog import load_dataset
    from ntdmbench.models.predictor import sha256_file

    jobs = plan(run)
    unique: dict[str, TrainJob] = {j.key: j for j in jobs.values()}
    parts: dict[str, list[TrainJob]] = {}  # per-category jobs of each key
    todo: list[TrainJob] = []
    for job in unique.values():
        if Path(job.checkpoint).is_file():
            continue
        if job.per_category:
            cats = resolve_categories(load_dataset(job.dataset, job.root), "all")
            parts[job.key] = [TrainJob(job.model, job.args, job.dataset, job.root, job.key,
                                       job.checkpoint.replace(".pth", f"-{c}.pth"), c, True) for c in cats]
            todo += [p for p in parts[job.key] if not Path(p.checkpoint).is_file()]
        else:
            todo.append(job)
    # Every rank must spread the same list: a rank that looked later could already see a part another rank
    # has just trained and drop it from its list, so the job would go round-robin to nobody. Rank 0's list
    # it is (the gather also keeps every rank from training before all have looked).
    todo = run.dist.gather(todo)[0]
    cached = sum(Path(j.checkpoint).is_file() for j in unique.values())
    run.log(f"training: {len(unique)} checkpoint(s), {cached} cached, {len(todo)} job(s) "
            f"over {run.dist.world} rank(s)")
    mine = spread(todo, run.dist)
    outcomes = []
    for k, job in enumerate(mine):
        part = f" [{job.category}]" if job.per_category else ""
        print(f"[suite {run.suite.name} rank {run.dist.rank}] training {job.model}{part} "
              f"({k + 1}/{len(mine)}) -> {job.checkpoint}", file=sys.stderr, flush=True)
        outcomes.append(_train_one(job, run.device, run.suite.seed, run.progress and run.dist.is_main))
    results: dict[str, dict[str, Any]] = {}
    for o in (o for rank_outcomes in run.dist.gather(outcomes) for o in rank_outcomes):
        r = results.setdefault(o["key"], {"seconds": 0.0, "errors": []})
        r["seconds"] += o["seconds"]
        if "error" in o:
            r["errors"].append(o["error"] if o["category"] == "all" else f"{o['category']}: {o['error']}")
    if run.dist.is_main:
        for key, job_parts in parts.items():
            r = results.setdefault(key, {"seconds": 0.0, "errors": []})
            if not r["errors"]:
                try:
                    _merge(unique[key], [p.checkpoint for p in job_parts], run.device)
                except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
                    reraise_if_interrupted()
                    r["errors"].append(f"merge: {describe_error(exc)}")
    results = run.dist.gather(results if run.dist.is_main else None)[0]
    out: dict[tuple[str, str], TrainingStatus] = {}
    for (row_id, dataset), job in jobs.items():
        r = results.get(job.key, {"seconds": 0.0, "errors": []})
        status = TrainingStatus(row=row_id, model=job.model, dataset=dataset, key=job.key, checkpoint=job.checkpoint,
                                cached=job.key not in results, seconds=r["seconds"],
                                error="; ".join(r["errors"]) or None)
        if status.error is None:
            if Path(job.checkpoint).is_file():
                status.sha256 = sha256_file(job.checkpoint)
                side = Path(job.checkpoint).with_suffix(".json")
                if status.cached and side.is_file():  # report the training time it once took
                    status.seconds = json.loads(side.read_text()).get("seconds", 0.0)
                if run.dist.is_main and not status.cached:
                    write_json(side, {"model": job.model, "args": job.args, "dataset": job.dataset,
                                      "root": job.root, "seed": run.suite.seed, "key": job.key,
                                      "sha256": status.sha256, "seconds": status.seconds})
            else:
                status.error = f"no checkpoint at {job.checkpoint}"
        out[(row_id, dataset)] = status
    return out
