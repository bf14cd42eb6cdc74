"""``run`` = predict then score, resumable at any point (detectron2's loop, BOP's stages).

Predictions are appended per batch to this worker's shard; a restarted run skips ids already predicted
in any shard and retries the failed ones (``keep_failures`` keeps them). A sample whose loading or
prediction raises becomes a failure record and the run goes on; a run with no samples, or in which every
sample failed, ends in ``RunFailedError``. One process at a time writes a run folder (``FolderLock``).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ntdmbench.benchmark import provenance, scoring
from ntdmbench.benchmark.device import check_device
from ntdmbench.benchmark.interrupt import reraise_if_interrupted
from ntdmbench.benchmark.store import (FolderLock, RunDir, ShardWriter, lock_name, read_jsonl, run_key, write_json,
                                       write_jsonl, write_yaml, writing_to)
from ntdmbench.datasets.base import Dataset
from ntdmbench.datasets.catalog import load_dataset
from ntdmbench.datasets.records import Prediction, Sample
from ntdmbench.errors import InputError, RunFailedError
from ntdmbench.models.predictor import Predictor
from ntdmbench.models.registry import build_model

log = logging.getLogger("ntdmbench")


@dataclass
class RunConfig:
    model: str
    dataset: str
    root: str | None = None
    limit: int | None = None
    categories: list[str] | None = None  # only these categories (ids are ``{category}/{name}``)
    out: str = "runs"
    fresh: bool = False
    batch_size: int = 8
    device: str = "cpu"
    precision: str = "fp32"
    seed: int = 0
    checkpoint: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    keep_failures: bool = False  # a rerun leaves failed samples failed instead of retrying them

    def __post_init__(self) -> None:
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise InputError(f"--limit {self.limit}: must be a positive number of samples")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: must be a positive integer")


@dataclass
class RunResult:
    run_dir: RunDir
    metrics: dict[str, Any]


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def selected_ids(dataset: Dataset, limit: int | None, categories: Sequence[str] | None = None) -> list[str]:
    """Sorted ids (unusable ones included: they count as failures), optionally of some categories only,
    then the first ``limit`` of them."""
    ids = sorted({*dataset.ids(), *dataset.unusable()})
    if categories:
        wanted = set(categories)
        ids = [i for i in ids if i.split("/", 1)[0] in wanted]
    return ids if limit is None else ids[:limit]


def shard_ids(ids: Sequence[str], rank: int, world: int) -> list[str]:
    """This worker's ids: every ``world``-th of the sorted list, no padding, no overlap."""
    return list(ids[rank::world])


def _load(dataset: Dataset, sample_id: str) -> Sample | Prediction:
    try:
        return dataset.load(sample_id)
    except Exception as exc:  # a bad sample must not stop the run
        reraise_if_interrupted()
        return Prediction(id=sample_id, failure=f"load: {type(exc).__name__}: {exc}")


def predict_batch(model: Predictor, samples: Sequence[Sample], device: str = "cpu") -> list[Prediction]:
    """Predict a batch; if it raises, retry sample by sample so only the bad ones fail."""
    start = time.perf_counter()
    try:
        preds = list(model.predict(samples))
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
    except Exception as exc:
        reraise_if_interrupted()
        if len(samples) == 1:
            log.warning("sample %s failed: %s: %s", samples[0].id, type(exc).__name__, exc)
            return [Prediction(id=samples[0].id, failure=f"{type(exc).__name__}: {exc}")]
        return [p for s in samples for p in predict_batch(model, [s], device)]
    per_sample = (time.perf_counter() - start) / len(samples)
    by_id = {p.id: p for p in preds}
    out = []
    for s in samples:
        p = by_id.get(s.id) or Prediction(id=s.id, failure="predictor returned no prediction for this id")
        if p.time_s is None:
            p.time_s = per_sample
        out.append(p)
    return out


def predict(model: Predictor, dataset: Dataset, ids: Sequence[str], writer: ShardWriter,
            batch_size: int, device: str = "cpu", progress: bool = True) -> int:
    """Predict ``ids`` in batches, writing each batch as it completes. Returns the count written."""
    from tqdm.auto import tqdm

    done = 0
    with tqdm(total=len(ids), desc=f"{getattr(model, 'name', 'model')}", unit="img", disable=not progress or not ids) as bar:
        for begin in range(0, len(ids), batch_size):
            loaded = [_load(dataset, i) for i in ids[begin:begin + batch_size]]
            failed = [x for x in loaded if isinstance(x, Prediction)]
            samples = [x for x in loaded if isinstance(x, Sample)]
            preds = failed + (predict_batch(model, samples, device) if samples else [])
            writer.write(preds)
            done += len(preds)
            bar.update(len(preds))
    return done


def score_run(run_dir: RunDir, dataset: Dataset | None = None) -> dict[str, Any]:
    """(Re-)score a run directory from its shards; writes samples.jsonl and metrics.json.

    A selected sample whose annotation or image cannot be used is scored as a failure (status
    ``unusable``), so n never shrinks silently; ``metrics.json`` also records ``limit`` and ``categories``.
    """
    cfg = run_dir.config()
    dataset = dataset or load_dataset(cfg["dataset"], cfg.get("root"))
    ids = selected_ids(dataset, cfg.get("limit"), cfg.get("categories"))
    unusable = dataset.unusable()
    predictions = run_dir.read_predictions()
    tasks = set(cfg["model_describe"]["capabilities"])
    rows = [scoring.unusable_row(i, *unusable[i], tasks) if i in unusable
            else scoring.score_sample(dataset.load(i), predictions.get(i), tasks) for i in ids]
    summary = scoring.aggregate(rows, seed=cfg.get("seed", 0))
    write_jsonl(run_dir.file("samples.jsonl"), rows)
    metrics = {
        "model": cfg["model"], "dataset": cfg["dataset"], "run_key": cfg["run_key"],
        "dataset_version": cfg["dataset_describe"]["version"],
        "dataset_index_hash": cfg["dataset_describe"]["index_hash"],
        "limit": cfg.get("limit"), "categories": cfg.get("categories"),
        "tasks": sorted(tasks), **summary,
    }
    write_json(run_dir.file("metrics.json"), metrics)
    return metrics


def run_identity(cfg: RunConfig, model: Predictor, dataset: Dataset) -> dict[str, Any]:
    """Everything that changes a run's results; its hash names the run folder (BOP's signature).

    The dataset is named by content (name, adapter version, index hash), never by the path it was read
    from; the device by its kind (``cuda``, not ``cuda:1``); the code by ``provenance.code_identity``.
    """
    return {"model": model.describe(), "dataset": dataset.identity(),
            "model_args": cfg.model_args, "precision": cfg.precision, "batch_size": cfg.batch_size,
            "seed": cfg.seed, "limit": cfg.limit, "categories": sorted(cfg.categories) if cfg.categories else None,
            "device": cfg.device.split(":", 1)[0], "code": provenance.code_identity(model)}


def _attach_log(run_dir: RunDir) -> logging.Handler:
    handler = logging.FileHandler(run_dir.file("log.txt"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def run(cfg: RunConfig, rank: int = 0, world: int = 1, dataset: Dataset | None = None,
        model: Predictor | None = None) -> RunResult:
    check_device(cfg.device)
    seed_everything(cfg.seed)
    cfg = dataclasses.replace(cfg, root=str(Path(cfg.root).resolve()) if cfg.root else None)  # `score` from anywhere
    dataset = dataset or load_dataset(cfg.dataset, cfg.root)
    model = model or build_model(cfg.model, cfg.model_args, device=cfg.device, checkpoint=cfg.checkpoint)
    identity = run_identity(cfg, model, dataset)
    key = run_key(identity)
    run_dir = RunDir.for_run(cfg.out, cfg.model, cfg.dataset, key)
    with writing_to(Path(cfg.out)), FolderLock(run_dir.path / lock_name(rank, world)):
        handler = _attach_log(run_dir)
        try:
            return _run_locked(cfg, rank, world, dataset, model, run_dir,
                               {**asdict(cfg), "run_key": key, "code": identity["code"],
                                "model_describe": identity["model"], "dataset_describe": dataset.describe()})
        finally:
            log.removeHandler(handler)
            handler.close()


def _run_locked(cfg: RunConfig, rank: int, world: int, dataset: Dataset, model: Predictor, run_dir: RunDir,
                resolved: dict[str, Any]) -> RunResult:
    """Predict what is not done yet into this rank's shard; rank 0 then scores every shard."""
    if cfg.fresh and rank == 0:
        moved = run_dir.set_aside_predictions()
        if moved:
            log.info("--fresh: previous predictions moved to %s", moved)
    if rank == 0:
        write_yaml(run_dir.file("config.yaml"), resolved)
    prov = provenance.collect(cfg.device, cfg.seed)
    ids = selected_ids(dataset, cfg.limit, cfg.categories)
    if not ids:
        within = f" of categories {', '.join(cfg.categories)}" if cfg.categories else ""
        raise RunFailedError(f"{cfg.dataset} at {cfg.root or 'its default root'}: no samples{within} to predict")
    selected = set(ids)
    unusable = {i: reason for i, reason in dataset.unusable().items() if i in selected}
    if unusable and rank == 0:
        for _, message in unusable.values():
            log.info("unusable sample: %s", message)
        log.warning("%d selected sample(s) have an unreadable, incomplete or missing annotation or image and "
                    "count as failures (listed in %s)", len(unusable), run_dir.file("log.txt"))
    finished = run_dir.finished_ids(cfg.keep_failures)
    todo = [i for i in shard_ids(ids, rank, world) if i not in finished]
    log.info("run %s: %d samples selected, %d already done, %d to predict on rank %d/%d",
             run_dir.path, len(ids), len(finished & selected), len(todo), rank, world)
    with ShardWriter(run_dir.shard(rank)) as writer:
        predict(model, dataset, todo, writer, cfg.batch_size, cfg.device, cfg.progress)
    prov["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(run_dir.file("provenance.json" if world == 1 else f"provenance-{rank:03d}.json"), prov)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every shard complete before rank 0 merges and scores
    if rank != 0:
        return RunResult(run_dir, {})
    metrics = score_run(run_dir, dataset)
    if metrics["n_failed"] == metrics["n"]:
        first = next((r.get("failure") for r in read_jsonl(run_dir.file("samples.jsonl")) if r.get("failure")),
                     "no usable prediction")
        raise RunFailedError(f"all {metrics['n']} samples failed (first: {first}); nothing to report from "
                             f"{run_dir.path}; a rerun retries them{' without --keep-failures' if cfg.keep_failures else ''}")
    return RunResult(run_dir, metrics)
