"""``ntdmbench`` command line: run, score, ls, and the subcommands other modules register.

Bad input ends in one line on stderr (``ntdmbench: error: ...``) and exit code 2; set
``NTDMBENCH_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ntdmbench.datasets.records import DataError
from ntdmbench.registry import UnknownNameError

# Modules exposing ``register(subparsers)`` for their own subcommands.
COMMAND_MODULES: list[str] = ["ntdmbench.datasets.cli", "ntdmbench.benchmark.train", "ntdmbench.benchmark.suites.cli",
                               "ntdmbench.benchmark.timing", "ntdmbench.reports.cli", "ntdmbench.reports.compare"]


def parse_model_args(text: str | None) -> dict[str, Any]:
    """``k=v,k2=v2`` (lm-eval's --model_args); values are parsed as YAML scalars (numbers, bools)."""
    import yaml

    if not text:
        return {}
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model-args: expected key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from ntdmbench.benchmark.runner import RunConfig, run

    cfg = RunConfig(
        model=args.model, dataset=args.dataset, root=args.root, limit=args.limit, out=args.out,
        fresh=args.fresh, batch_size=args.batch_size, device=args.device, seed=args.seed,
        checkpoint=args.checkpoint, model_args=parse_model_args(args.model_args), progress=not args.no_progress,
    )
    result = run(cfg)
    _print_summary(result.metrics)
    print(f"results: {result.run_dir.path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    if args.predictions or args.ground_truth:
        from ntdmbench.benchmark.external import score_pose_csv

        if not (args.predictions and args.ground_truth):
            raise ValueError("score: --predictions and --ground-truth go together")
        summary = score_pose_csv(args.predictions, args.ground_truth)
        for problem in summary.get("problems", []):
            print(f"warning: {problem}", file=sys.stderr)
    elif args.run_dir:
        from ntdmbench.benchmark.runner import score_run
        from ntdmbench.benchmark.store import RunDir

        summary = score_run(RunDir(args.run_dir))
    else:
        raise ValueError("score: give a RUN_DIR, or --predictions PRED.csv --ground-truth GT.csv")
    _print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        print(f"written: {args.json}")
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from ntdmbench.benchmark.metrics import METRICS
    from ntdmbench.benchmark.suites.schema import suite_names
    from ntdmbench.datasets.catalog import DATASETS
    from ntdmbench.models.registry import MODELS

    sections = {
        "models": MODELS.names(),
        "datasets": DATASETS.names(),
        "metrics": [f"{m.key}  ({m.task}, {m.unit}, {'higher' if m.higher_is_better else 'lower'} is better)"
                    for m in METRICS.values()],
        "suites": suite_names(),
    }
    for name, items in sections.items():
        if args.what in (None, name):
            print(f"{name}:")
            for item in items:
                print(f"  {item}")
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    from tabulate import tabulate

    from ntdmbench.benchmark.metrics import METRICS

    keys = [k for k in METRICS if k in summary]
    rows = [["all", summary["n"], *[summary[k] for k in keys]]]
    rows += [[c, v["n"], *[v.get(k) for k in keys]] for c, v in summary.get("per_category", {}).items()]
    print(tabulate(rows, headers=["category", "n", *keys], floatfmt=".1f"))
    print(f"failed or missing predictions: {summary.get('n_failed', 0)} of {summary['n']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntdmbench", description="Benchmark harness for robust 3D-aware vision.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="predict a dataset with a model, then score it")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", help="dataset root (else the dataset's environment variable)")
    p.add_argument("--limit", type=int, help="only the first N samples (sorted ids)")
    p.add_argument("--out", default="runs", help="results folder (default: runs)")
    p.add_argument("--fresh", action="store_true", help="start over (old predictions are moved aside, not deleted)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="model checkpoint file")
    p.add_argument("--model-args", help="constructor arguments, k=v,k2=v2")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("score", help="re-score a run directory, or score an external predictions CSV")
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--predictions", help="OOD-CV challenge CSV: imgs,labels,azimuth,elevation,theta,distance (degrees)")
    p.add_argument("--ground-truth", help="ground-truth CSV in the same format")
    p.add_argument("--json", help="also write the summary as JSON here")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("ls", help="list models, datasets, metrics and suites")
    p.add_argument("what", nargs="?", choices=["models", "datasets", "metrics", "suites"])
    p.set_defaults(func=_cmd_ls)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, FileNotFoundError, UnknownNameError, ValueError, ImportError) as exc:
        if os.environ.get("NTDMBENCH_DEBUG"):
            raise
        print(f"ntdmbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ntdmbench: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
