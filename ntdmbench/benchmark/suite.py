"""``ntdmbench suite run SUITE``: one command from data to a finished report (the paper's Tables 1-3).

A suite is a YAML file (a name from ``ntdmbench/benchmark/suites/`` or a path)::

    name: quick-table1
    extends: quick            # start from another suite: mappings merge key by key (models.ROW.args too);
                              # ``tables`` lists the parent's table ids, or mappings merged onto the
                              # parent's table of the same id
    synthetic: quick          # generate this synthetic preset under --root when it is not there yet
    roots: {pascal3d: pascal3d, oodcv: oodcv}   # dataset family -> folder under --root
    train: pascal3d/train     # what models are trained on (a table may override it)
    register: {my-model: "my_pkg.model:MyModel"}  # extra models, as an entry point would add them
    models:                   # table rows
      ntdm:
        model: ntdm           # registry name (default: the row id)
        label: NTDM           # row label in the tables
        args: {}              # constructor args for training and prediction (part of the training key)
        eval_args: {}         # constructor args for prediction only (inference switches)
        train: true           # false: nothing to train (oracle, random)
        per_category: false   # one training job per category, spread over ranks, joined by model.merge()
        batch_size: 8
    tables:
      - id: table1
        benchmark: occluded-pascal3d
        conditions: {L0: pascal3d/val, L1: occluded-pascal3d/val/L1}
        clean: L0             # reference of the drop column
        mean: [L1]            # pooled over these samples into a ``mean`` column
        metrics: [acc_pi6, acc_pi18, amodal_iou, top1]
        categories: null      # only these categories (Table 3: sofa, bus, motorbike)
        layout: wide          # LaTeX: one row per model (wide) or a block per metric (stacked)
        models: [ntdm]

Stages, each resumable: data (generated once), training (a checkpoint per model keyed by a hash of
its model, args, training set and seed, under ``OUT/checkpoints``; a killed training resumes from
its ``.resume`` state), prediction and scoring (``ntdmbench run``'s run directories under ``OUT``,
which skip finished ids), then the report under ``OUT/suites/NAME/``. A model that cannot be built,
trained or run is recorded and the suite goes on; the report shows its cells as missing.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ntdmbench.benchmark.distributed import Dist, init_from_env, spread
from ntdmbench.benchmark.store import run_key, write_json

SUITES_DIR = Path(__file__).with_name("suites")
INDEX = "index.json"
CHECKPOINT_FORMAT = 1  # bump to retrain every cached checkpoint

SUITE_KEYS = {"name", "title", "extends", "synthetic", "roots", "train", "register", "models", "tables",
              "seed", "data_seed"}
ROW_KEYS = {"model", "label", "args", "eval_args", "train", "per_category", "batch_size"}
TABLE_KEYS = {"id", "title", "benchmark", "conditions", "clean", "mean", "metrics", "categories", "layout",
              "models", "train"}


class SuiteError(ValueError):
    """A suite file that does not describe a runnable suite."""


@dataclass
class Row:
    id: str
    model: str
    label: str
    args: dict[str, Any] = field(default_factory=dict)
    eval_args: dict[str, Any] = field(default_factory=dict)
    train: bool = True
    per_category: bool = False
    batch_size: int = 8


@dataclass
class Table:
    id: str
    title: str
    benchmark: str
    conditions: dict[str, str]
    metrics: list[str]
    models: list[str]
    train: str | None = None
    clean: str | None = None
    mean: list[str] | None = None
    categories: list[str] | None = None
    layout: str = "wide"


@dataclass
class Suite:
    name: str
    title: str
    rows: dict[str, Row]
    tables: list[Table]
    synthetic: str | None = None
    roots: dict[str, str | None] = field(default_factory=dict)
    register: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    data_seed: int = 0
    raw: dict[str, Any] = field(default_factory=dict)  # the resolved YAML, written next to the report


# --- loading --------------------------------------------------------------------------------------


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def _suite_path(ref: str, relative_to: Path | None = None) -> Path:
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_absolute() and relative_to is not None and not path.is_file():
            path = relative_to / path
        if not path.is_file():
            raise FileNotFoundError(f"suite file {ref} not found")
        return path
    shipped = SUITES_DIR / f"{ref}.yaml"
    if not shipped.is_file():
        raise SuiteError(f"unknown suite {ref!r} (known: {', '.join(suite_names())}; or give a .yaml path)")
    return shipped


def _read(ref: str, relative_to: Path | None = None, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The suite's YAML with ``extends`` resolved: the parent's keys, overridden by the child's."""
    path = _suite_path(ref, relative_to)
    if str(path.resolve()) in seen:
        raise SuiteError(f"suite {ref}: 'extends' loops back to itself")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite is a mapping, got {type(raw).__name__}")
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise SuiteError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(SUITE_KEYS))})")
    raw.setdefault("name", path.stem)
    parent_ref = raw.pop("extends", None)
    if parent_ref is None:
        return raw
    parent = _read(parent_ref, path.parent, (*seen, str(path.resolve())))
    merged = _deep_merge(parent, {k: v for k, v in raw.items() if k != "tables"})
    if "tables" in raw:
        by_id = {t.get("id"): t for t in parent.get("tables", []) if isinstance(t, dict)}
        picked = []
        for t in raw["tables"] or []:
            if not isinstance(t, (str, dict)):
                raise SuiteError(f"{path}: tables: expected a table id or a mapping, got {t!r}")
            ref_id = t if isinstance(t, str) else t.get("id")
            if isinstance(t, str) and t not in by_id:
                raise SuiteError(f"{path}: table {t!r} is not in {parent_ref} (it has {', '.join(map(str, by_id))})")
            picked.append(by_id[t] if isinstance(t, str) else _deep_merge(by_id.get(ref_id, {}), t))
        merged["tables"] = picked
    return merged


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """``--set models.ntdm.args.steps=30``: a dotted key into the suite, the value parsed as YAML."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise SuiteError(f"--set: expected dotted.key=value, got {assignment!r}")
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if isinstance(node, list):
            node = next((t for t in node if isinstance(t, dict) and t.get("id") == part), None)
            if node is None:
                raise SuiteError(f"--set {key}: no table with id {part!r}")
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise SuiteError(f"--set {key}: {part!r} is not a mapping")
    if not isinstance(node, dict):
        raise SuiteError(f"--set {key}: cannot set a key on a list")
    node[parts[-1]] = yaml.safe_load(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _names(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SuiteError(f"{where}: expected a list of names, got {value!r}")
    return list(value)


def _row(row_id: str, spec: Any, name: str) -> Row:
    spec = _mapping(spec, f"suite {name}: models.{row_id}")
    unknown = set(spec) - ROW_KEYS
    if unknown:
        raise SuiteError(f"suite {name}: models.{row_id}: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(ROW_KEYS))})")
    batch = spec.get("batch_size", 8)
    if not isinstance(batch, int) or batch < 1:
        raise SuiteError(f"suite {name}: models.{row_id}.batch_size must be a positive integer, got {batch!r}")
    return Row(id=row_id, model=str(spec.get("model", row_id)), label=str(spec.get("label", row_id)),
               args=_mapping(spec.get("args"), f"models.{row_id}.args"),
               eval_args=_mapping(spec.get("eval_args"), f"models.{row_id}.eval_args"),
               train=bool(spec.get("train", True)), per_category=bool(spec.get("per_category", False)),
               batch_size=batch)


def _table(spec: Any, name: str, rows: dict[str, Row], default_train: str | None) -> Table:
    from ntdmbench.benchmark.metrics import METRICS
    from ntdmbench.datasets.catalog import DATASETS

    spec = _mapping(spec, f"suite {name}: tables")
    tid = spec.get("id")
    where = f"suite {name}: table {tid!r}"
    if not isinstance(tid, str) or not tid:
        raise SuiteError(f"suite {name}: every table needs an id")
    unknown = set(spec) - TABLE_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(TABLE_KEYS))})")
    conditions = {str(k): str(v) for k, v in _mapping(spec.get("conditions"), f"{where}: conditions").items()}
    if not conditions:
        raise SuiteError(f"{where}: no conditions")
    for cond, dataset in conditions.items():
        if cond == "mean":
            raise SuiteError(f"{where}: 'mean' is computed from the 'mean' list, not a condition")
        if dataset not in DATASETS:
            raise SuiteError(f"{where}: condition {cond}: unknown dataset {dataset!r}")
    metrics = _names(spec.get("metrics"), f"{where}: metrics") or []
    bad = [m for m in metrics if m not in METRICS]
    if not metrics or bad:
        raise SuiteError(f"{where}: metrics {bad or metrics} (choose from {', '.join(METRICS)})")
    models = _names(spec.get("models"), f"{where}: models") or []
    missing = [m for m in models if m not in rows]
    if not models or missing:
        raise SuiteError(f"{where}: models {missing or models} are not rows of the suite (rows: {', '.join(rows)})")
    clean = spec.get("clean")
    if clean is not None and clean not in conditions:
        raise SuiteError(f"{where}: clean {clean!r} is not a condition ({', '.join(conditions)})")
    mean = _names(spec.get("mean"), f"{where}: mean")
    if mean and not set(mean) <= set(conditions):
        raise SuiteError(f"{where}: mean {mean} names conditions it does not have ({', '.join(conditions)})")
    layout = spec.get("layout", "wide")
    if layout not in ("wide", "stacked"):
        raise SuiteError(f"{where}: layout {layout!r} (choose wide or stacked)")
    train = spec.get("train", default_train)
    if any(rows[m].train for m in models) and train not in DATASETS:
        raise SuiteError(f"{where}: training dataset {train!r} is not a catalog name")
    return Table(id=tid, title=str(spec.get("title", tid)), benchmark=str(spec.get("benchmark", tid)),
                 conditions=conditions, metrics=metrics, models=models, train=train, clean=clean, mean=mean,
                 categories=_names(spec.get("categories"), f"{where}: categories"), layout=layout)


def build_suite(raw: dict[str, Any]) -> Suite:
    """Validate a resolved suite mapping; every error names the key and the value."""
    from ntdmbench.datasets.synthetic.generate import PRESETS
    from ntdmbench.models.registry import MODELS

    name = str(raw.get("name", "suite"))
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise SuiteError(f"suite {name}: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(SUITE_KEYS))})")
    register = {str(k): str(v) for k, v in _mapping(raw.get("register"), f"suite {name}: register").items()}
    for model_name, target in register.items():
        if model_name not in MODELS:
            MODELS.register(model_name, target)
    rows = {str(k): _row(str(k), v, name) for k, v in _mapping(raw.get("models"), f"suite {name}: models").items()}
    for row in rows.values():
        if row.model not in MODELS:
            raise SuiteError(f"suite {name}: models.{row.id}: unknown model {row.model!r} "
                             f"(registered: {', '.join(MODELS.names())})")
    train = raw.get("train")
    tables_raw = raw.get("tables") or []
    if not isinstance(tables_raw, list) or not tables_raw:
        raise SuiteError(f"suite {name}: no tables")
    tables = [_table(t, name, rows, train) for t in tables_raw]
    ids = [t.id for t in tables]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"suite {name}: table ids repeat: {ids}")
    synthetic = raw.get("synthetic")
    if synthetic is not None and synthetic not in PRESETS:
        raise SuiteError(f"suite {name}: synthetic preset {synthetic!r} (choose from {', '.join(PRESETS)})")
    roots = {str(k): (None if v is None else str(v))
             for k, v in _mapping(raw.get("roots"), f"suite {name}: roots").items()}
    used = {m for t in tables for m in t.models}
    return Suite(name=name, title=str(raw.get("title", name)), rows={k: v for k, v in rows.items() if k in used},
                 tables=tables, synthetic=synthetic, roots=roots, register=register,
                 seed=int(raw.get("seed", 0)), data_seed=int(raw.get("data_seed", 0)), raw=raw)


def load_suite(ref: str, overrides: list[str] | None = None, tables: list[str] | None = None,
               models: list[str] | None = None) -> Suite:
    """Read, resolve ``extends``, apply ``--set`` overrides and ``--tables``/``--models`` picks, validate."""
    raw = copy.deepcopy(_read(ref))
    for assignment in overrides or []:
        apply_override(raw, assignment)
    if tables:
        known = [t.get("id") for t in raw.get("tables", [])]
        unknown = [t for t in tables if t not in known]
        if unknown:
            raise SuiteError(f"--tables {', '.join(unknown)}: not in suite {raw['name']} ({', '.join(map(str, known))})")
        raw["tables"] = [t for t in raw["tables"] if t.get("id") in tables]
    if models:
        unknown = [m for m in models if m not in (raw.get("models") or {})]
        if unknown:
            raise SuiteError(f"--models {', '.join(unknown)}: not rows of suite {raw['name']} "
                             f"({', '.join(raw.get('models') or {})})")
        for t in raw.get("tables", []):
            t["models"] = [m for m in t.get("models", []) if m in models]
        raw["tables"] = [t for t in raw["tables"] if t["models"]]
    return build_suite(raw)


# --- roots and data -------------------------------------------------------------------------------


def default_root(suite: Suite) -> Path | None:
    """Synthetic suites keep their data in ``data/synth-PRESET``; real ones read the env variables."""
    return Path("data") / f"synth-{suite.synthetic}" if suite.synthetic else None


def dataset_root(suite: Suite, dataset: str, root: Path | None) -> str | None:
    """The root for one catalog dataset: ``ROOT/roots[family]``; None falls back to its env variable."""
    from ntdmbench.datasets.catalog import DATASETS

    family = getattr(DATASETS.get(dataset), "family", dataset.split("/", 1)[0])
    sub = suite.roots.get(family)
    if sub is None and family.startswith("occluded-"):
        sub = suite.roots.get(family.removeprefix("occluded-"))
    if root is None:
        return sub if sub is not None and Path(sub).is_absolute() else None
    return str(root / sub) if sub is not None else str(root)


def ensure_data(suite: Suite, root: Path | None, dist: Dist, log) -> float:
    """Generate the suite's synthetic preset under ``root`` unless it is there; returns seconds spent."""
    if suite.synthetic is None or root is None:
        return 0.0
    start = time.perf_counter()
    meta = root / "synthetic.json"
    if dist.is_main:
        if meta.is_file():
            from ntdmbench.datasets.synthetic.generate import PRESETS

            found = json.loads(meta.read_text())
            wanted = json.loads(json.dumps(dataclasses.asdict(PRESETS[suite.synthetic])))
            if found.get("preset") != wanted or found.get("seed") != suite.data_seed:
                raise SuiteError(f"--root {root}: holds another synthetic benchmark than preset "
                                 f"{suite.synthetic!r} with seed {suite.data_seed}; give another --root")
            log(f"data: synthetic preset {suite.synthetic!r} already in {root}")
        elif root.exists() and any(root.iterdir()):
            raise SuiteError(f"--root {root}: not empty and not a synthetic benchmark (no synthetic.json); "
                             f"give an empty or new folder")
        else:
            from ntdmbench.datasets.synthetic.generate import generate

            log(f"data: generating synthetic preset {suite.synthetic!r} under {root}")
            generate(root, suite.synthetic, suite.data_seed)
    dist.barrier()
    return time.perf_counter() - start


# --- training -------------------------------------------------------------------------------------


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
    from ntdmbench.benchmark.training import train

    start = time.perf_counter()
    try:
        _, sha = train(job.model, job.dataset, job.root, job.category, job.checkpoint, device, seed,
                       job.args, progress=progress)
    except Exception as exc:  # noqa: BLE001 - one model's failure is recorded, the suite goes on
        return {"key": job.key, "category": job.category, "error": _describe_error(exc),
                "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    return {"key": job.key, "category": job.category, "sha256": sha, "seconds": seconds}


def _merge(job: TrainJob, parts: list[str], device: str) -> None:
    """Join per-category checkpoints into the job's checkpoint with the model's ``merge``; the parts
    are removed once the joined checkpoint is written (until then they are what a rerun resumes from)."""
    from ntdmbench.benchmark.runner import RunConfig, make_model

    model = make_model(RunConfig(model=job.model, dataset=job.dataset, device=device, model_args=job.args))
    merge = getattr(model, "merge", None)
    if merge is None:
        raise SuiteError(f"model {job.model!r} has no merge(paths); it cannot train with per_category: true")
    merge([Path(p) for p in parts])
    model.save(job.checkpoint)
    for p in parts:
        Path(p).unlink(missing_ok=True)


def _describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --- the whole suite ------------------------------------------------------------------------------


@dataclass
class SuiteRun:
    """Where a suite run writes, and what it has recorded so far (``index.json``)."""

    suite: Suite
    out: Path
    root: Path | None
    device: str
    dist: Dist
    limit: int | None = None
    progress: bool = True
    index: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.out / "suites" / self.suite.name

    def log(self, message: str) -> None:
        if self.dist.is_main:
            print(f"[suite {self.suite.name}] {message}", file=sys.stderr, flush=True)

    def fail(self, row: str, stage: str, error: str, table: str | None = None, condition: str | None = None) -> None:
        self.index["failures"].append({"row": row, "stage": stage, "table": table, "condition": condition,
                                       "error": error})
        where = "/".join(x for x in (table, row, condition) if x)
        self.log(f"FAILED {stage} {where}: {error}")

    # -- training --

    def plan_training(self) -> dict[tuple[str, str], TrainJob]:
        """One job per distinct (row, training set); rows with identical model and args share it."""
        from ntdmbench.datasets.catalog import load_dataset

        jobs: dict[tuple[str, str], TrainJob] = {}
        describes: dict[str, dict[str, Any]] = {}
        for table in self.suite.tables:
            for row_id in table.models:
                row = self.suite.rows[row_id]
                if not row.train or (row_id, table.train) in jobs:
                    continue
                root = dataset_root(self.suite, table.train, self.root)
                if table.train not in describes:
                    describes[table.train] = load_dataset(table.train, root).describe()
                key = training_key(row.model, row.args, describes[table.train], self.suite.seed)
                path = self.out / "checkpoints" / row.model / f"{key}.pth"
                jobs[(row_id, table.train)] = TrainJob(row.model, row.args, table.train, root, key, str(path),
                                                       per_category=row.per_category)
        return jobs

    def train_all(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Train what has no checkpoint yet, spread over ranks; returns each (row, set)'s outcome."""
        from ntdmbench.benchmark.training import resolve_categories
        from ntdmbench.datasets.catalog import load_dataset
        from ntdmbench.models.predictor import sha256_file

        jobs = self.plan_training()
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
        cached = sum(Path(j.checkpoint).is_file() for j in unique.values())
        self.log(f"training: {len(unique)} checkpoint(s), {cached} cached, {len(todo)} job(s) "
                 f"over {self.dist.world} rank(s)")
        mine = spread(todo, self.dist)
        outcomes = []
        for k, job in enumerate(mine):
            part = f" [{job.category}]" if job.per_category else ""
            print(f"[suite {self.suite.name} rank {self.dist.rank}] training {job.model}{part} "
                  f"({k + 1}/{len(mine)}) -> {job.checkpoint}", file=sys.stderr, flush=True)
            outcomes.append(_train_one(job, self.device, self.suite.seed, self.progress and self.dist.is_main))
        results: dict[str, dict[str, Any]] = {}
        for o in (o for rank_outcomes in self.dist.gather(outcomes) for o in rank_outcomes):
            r = results.setdefault(o["key"], {"seconds": 0.0, "errors": []})
            r["seconds"] += o["seconds"]
            if "error" in o:
                r["errors"].append(o["error"] if o["category"] == "all" else f"{o['category']}: {o['error']}")
        if self.dist.is_main:
            for key, job_parts in parts.items():
                r = results.setdefault(key, {"seconds": 0.0, "errors": []})
                if not r["errors"]:
                    try:
                        _merge(unique[key], [p.checkpoint for p in job_parts], self.device)
                    except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
                        r["errors"].append(f"merge: {_describe_error(exc)}")
        results = self.dist.gather(results if self.dist.is_main else None)[0]
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for (row_id, dataset), job in jobs.items():
            r = results.get(job.key, {"seconds": 0.0, "errors": []})
            status = {"row": row_id, "model": job.model, "dataset": dataset, "key": job.key,
                      "checkpoint": job.checkpoint, "cached": job.key not in results, "seconds": r["seconds"],
                      "error": "; ".join(r["errors"]) or None}
            if status["error"] is None:
                if Path(job.checkpoint).is_file():
                    status["sha256"] = sha256_file(job.checkpoint)
                    side = Path(job.checkpoint).with_suffix(".json")
                    if status["cached"] and side.is_file():  # report the training time it once took
                        status["seconds"] = json.loads(side.read_text()).get("seconds", 0.0)
                    if self.dist.is_main and not status["cached"]:
                        write_json(side, {"model": job.model, "args": job.args, "dataset": job.dataset,
                                          "root": job.root, "seed": self.suite.seed, "key": job.key,
                                          "sha256": status["sha256"], "seconds": status["seconds"]})
                else:
                    status["error"] = f"no checkpoint at {job.checkpoint}"
            out[(row_id, dataset)] = status
        return out

    # -- prediction --

    def predict_all(self, training: dict[tuple[str, str], dict[str, Any]]) -> None:
        from ntdmbench.benchmark.runner import RunConfig, make_model, run

        for table in self.suite.tables:
            for row_id in table.models:
                row = self.suite.rows[row_id]
                entry = {"id": row.id, "label": row.label, "model": row.model, "args": row.args,
                         "eval_args": row.eval_args, "status": "ok", "results": {}}
                self.index["tables"][table.id]["rows"].append(entry)
                checkpoint = None
                if row.train:
                    status = training[(row_id, table.train)]
                    self.index["training"].setdefault(f"{row_id}@{table.train}", status)
                    if status["error"]:
                        entry["status"] = "failed"
                        self.fail(row_id, "train", status["error"], table.id)
                        continue
                    checkpoint = status["checkpoint"]
                base = RunConfig(model=row.model, dataset="", out=str(self.out), batch_size=row.batch_size,
                                 device=self.device, seed=self.suite.seed, checkpoint=checkpoint,
                                 model_args={**row.args, **row.eval_args}, limit=self.limit,
                                 categories=table.categories, progress=self.progress and self.dist.is_main)
                try:
                    model = make_model(base)
                except Exception as exc:  # noqa: BLE001
                    entry["status"] = "failed"
                    self.fail(row_id, "build", _describe_error(exc), table.id)
                    continue
                entry["describe"] = model.describe()
                entry["capabilities"] = entry["describe"].get("capabilities")
                for cond, dataset in table.conditions.items():
                    cfg = copy.copy(base)
                    cfg.dataset, cfg.root = dataset, dataset_root(self.suite, dataset, self.root)
                    self.log(f"{table.id}: {row.label} on {cond} ({dataset})")
                    start = time.perf_counter()
                    try:
                        result = run(cfg, self.dist.rank, self.dist.world, model=model)
                    except Exception as exc:  # noqa: BLE001
                        entry["status"] = "partial"
                        self.fail(row_id, "predict", _describe_error(exc), table.id, cond)
                        if self.dist.is_main and os.environ.get("NTDMBENCH_DEBUG"):
                            traceback.print_exc()
                        continue
                    seconds = time.perf_counter() - start
                    if self.dist.is_main:
                        entry["results"][cond] = self._keep(table.id, row_id, cond, result, seconds)

    def _keep(self, table: str, row: str, cond: str, result, seconds: float) -> dict[str, Any]:
        """Copy a run's metrics and per-sample rows into the suite (run dirs are shared between tables)."""
        folder = self.dir / "results" / table / row / cond
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "metrics.json", result.metrics)
        shutil.copyfile(result.run_dir.file("samples.jsonl"), folder / "samples.jsonl")
        return {"run_dir": str(result.run_dir.path), "metrics": str((folder / "metrics.json").relative_to(self.dir)),
                "samples": str((folder / "samples.jsonl").relative_to(self.dir)), "wall_s": seconds}

    def execute(self) -> Path:
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        t0 = time.perf_counter()
        self.index = {"suite": self.suite.name, "title": self.suite.title, "started": started,
                      "root": str(self.root) if self.root else None, "out": str(self.out), "device": self.device,
                      "world_size": self.dist.world, "limit": self.limit, "tables": {}, "training": {},
                      "failures": [], "timing_s": {}}
        for t in self.suite.tables:
            self.index["tables"][t.id] = {"title": t.title, "benchmark": t.benchmark, "conditions": list(t.conditions),
                                          "datasets": t.conditions, "order": len(self.index["tables"]),
                                          "clean": t.clean, "mean": t.mean, "metrics": t.metrics,
                                          "categories": t.categories, "layout": t.layout, "train": t.train,
                                          "rows": []}
        if self.dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "suite.yaml").write_text(yaml.safe_dump(self.suite.raw, sort_keys=False))
        self.index["timing_s"]["data"] = ensure_data(self.suite, self.root, self.dist, self.log)
        t1 = time.perf_counter()
        training = self.train_all()
        self.index["timing_s"]["training"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        self.predict_all(training)
        self.index["timing_s"]["prediction"] = time.perf_counter() - t2
        self.dist.barrier()
        if not self.dist.is_main:
            return self.dir / "report.md"
        from ntdmbench.benchmark import provenance
        from ntdmbench.reports.report import write_report

        self.index["provenance"] = provenance.collect(self.device, self.suite.seed)
        self.index["timing_s"]["total_before_report"] = time.perf_counter() - t0
        self.index["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(self.dir / INDEX, self.index)
        t3 = time.perf_counter()
        report = write_report(self.dir)
        self.index["timing_s"]["report"] = time.perf_counter() - t3
        self.index["timing_s"]["total"] = time.perf_counter() - t0
        write_json(self.dir / INDEX, self.index)
        return report


def run_suite(ref: str, root: str | None = None, out: str = "runs", device: str = "cpu",
              overrides: list[str] | None = None, tables: list[str] | None = None, models: list[str] | None = None,
              limit: int | None = None, progress: bool = True) -> tuple[Path, list[dict[str, Any]]]:
    """Run a suite end to end (under torchrun: this rank's part); returns the report path and failures."""
    suite = load_suite(ref, overrides, tables, models)
    dist, device = init_from_env(device)
    try:
        root_path = Path(root) if root else default_root(suite)
        runner = SuiteRun(suite, Path(out), root_path, device, dist, limit=limit, progress=progress)
        report = runner.execute()
        return report, runner.index["failures"]
    finally:
        dist.close()


def _cmd_run(args: argparse.Namespace) -> int:
    report, failures = run_suite(
        args.suite, args.root, args.out, args.device, args.set, _split(args.tables), _split(args.models),
        args.limit, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if failures:
        rows = sorted({f"{f['row']} ({f['stage']})" for f in failures})
        print(f"ntdmbench: {len(rows)} row(s) failed and show as missing: {', '.join(rows)}", file=sys.stderr)
    print(f"report: {report}")
    return 1 if failures else 0


def _cmd_show(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, args.set)
    print(yaml.safe_dump(suite.raw, sort_keys=False), end="")
    return 0


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def register(subparsers) -> None:
    p = subparsers.add_parser("suite", help="run a whole benchmark suite (the paper's tables) to a report")
    sub = p.add_subparsers(dest="suite_command", required=True)
    r = sub.add_parser("run", help="data, training, prediction, scoring and report; resumable")
    r.add_argument("suite", help=f"a shipped suite ({', '.join(suite_names())}) or a .yaml path")
    r.add_argument("--root", help="data root (synthetic suites: generated here; default data/synth-PRESET)")
    r.add_argument("--out", default="runs", help="runs, checkpoints and suites/NAME/report.md go here (default: runs)")
    r.add_argument("--device", default="cpu")
    r.add_argument("--tables", help="only these table ids, comma-separated")
    r.add_argument("--models", help="only these rows, comma-separated")
    r.add_argument("--limit", type=int, help="only the first N samples of each condition (a quick try)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite key, e.g. models.ntdm.args.steps=30 (repeatable)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_run)
    s = sub.add_parser("show", help="print a suite with extends and --set resolved")
    s.add_argument("suite")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.set_defaults(func=_cmd_show)
