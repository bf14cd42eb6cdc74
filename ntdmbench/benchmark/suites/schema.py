"""Suite files: reading, ``extends`` and ``--set``, and validation into typed rows and tables."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ntdmbench.errors import MissingFileError, NtdmbenchError

SUITES_DIR = Path(__file__).parent

SUITE_KEYS = {"name", "title", "extends", "synthetic", "roots", "train", "register", "models", "tables",
              "seed", "data_seed"}
ROW_KEYS = {"model", "label", "args", "eval_args", "train", "per_category", "batch_size"}
TABLE_KEYS = {"id", "title", "benchmark", "conditions", "clean", "mean", "metrics", "categories", "layout",
              "models", "train", "columns", "labels"}


class SuiteError(NtdmbenchError, ValueError):
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
    columns: dict[str, list[str]] | None = None  # metric -> the paper's columns (conditions or mean)
    labels: dict[str, str] = field(default_factory=dict)  # condition -> printed header, e.g. L0 -> w/o


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
            raise MissingFileError(f"suite file {ref} not found")
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
    raw = _parse_yaml(path.read_text(), str(path)) or {}
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


def _parse_yaml(text: str, where: str, in_file: bool = True) -> Any:
    """YAML, or one line naming where it breaks (``FILE:LINE:COLUMN``, or the ``--set`` and its column)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if mark is None:
            raise SuiteError(f"{where}: malformed YAML ({problem})") from None
        if in_file:
            raise SuiteError(f"{where}:{mark.line + 1}:{mark.column + 1}: malformed YAML ({problem})") from None
        raise SuiteError(f"{where}: malformed YAML at column {mark.column + 1} ({problem})") from None


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
    node[parts[-1]] = _parse_yaml(value, f"--set {assignment}", in_file=False)


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
    columns = _paper_columns(spec.get("columns"), metrics, [*conditions, *(["mean"] if mean else [])], where)
    labels = {str(k): str(v) for k, v in _mapping(spec.get("labels"), f"{where}: labels").items()}
    if not set(labels) <= set(conditions) | {"mean"}:
        raise SuiteError(f"{where}: labels {sorted(set(labels) - set(conditions))} are not conditions")
    train = spec.get("train", default_train)
    if any(rows[m].train for m in models) and train not in DATASETS:
        raise SuiteError(f"{where}: training dataset {train!r} is not a catalog name")
    return Table(id=tid, title=str(spec.get("title", tid)), benchmark=str(spec.get("benchmark", tid)),
                 conditions=conditions, metrics=metrics, models=models, train=train, clean=clean, mean=mean,
                 categories=_names(spec.get("categories"), f"{where}: categories"), layout=layout,
                 columns=columns, labels=labels)


def _paper_columns(value: Any, metrics: list[str], allowed: list[str], where: str) -> dict[str, list[str]] | None:
    """``columns``: the columns the paper prints, as one list for every metric or a mapping per metric
    (metrics left out print every condition); ``None`` when the key is absent."""
    if value is None:
        return None
    per_metric = {m: value for m in metrics} if isinstance(value, list) else _mapping(value, f"{where}: columns")
    out = {}
    for metric, cols in per_metric.items():
        names = _names(cols, f"{where}: columns.{metric}") or []
        if metric not in metrics or not names or not set(names) <= set(allowed):
            raise SuiteError(f"{where}: columns.{metric}: {names} (metrics {', '.join(metrics)}; "
                             f"columns from {', '.join(allowed)})")
        out[str(metric)] = names
    return out


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

