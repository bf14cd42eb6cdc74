"""``ntdmbench`` command line: run, score, ls, and the subcommands other modules register.

Bad input ends in one line on stderr (``ntdmbench: error: ...``) and exit code 2; set
``NTDMBENCH_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from ntdmbench.errors import InputError, NtdmbenchError

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
            raise InputError(f"--model-args: expected key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InputError(f"--model-args {item!r}: not a YAML value ({getattr(exc, 'problem', None) or exc})"
                             ) from None
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from ntdmbench.benchmark.distributed import init_from_env
    from ntdmbench.benchmark.runner import RunConfig, run

    model_args = parse_model_args(args.model_args)
    dist, device = init_from_env(args.device)  # under torchrun: this rank's share of the samples
    try:
        cfg = RunConfig(
            model=args.model, dataset=args.dataset, root=args.root, limit=args.limit, out=args.out,
            fresh=args.fresh, batch_size=args.batch_size, device=device, seed=args.seed,
            checkpoint=args.checkpoint, model_args=model_args, progress=not args.no_progress and dist.is_main,
            keep_failures=args.keep_failures,
        )
        result = run(cfg, dist.rank, dist.world)
    finally:
        dist.close()
    if dist.is_main:
        _print_summary(result.metrics)
        print(f"results: {result.run_dir.path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    if args.predictions or args.ground_truth:
        from ntdmbench.benchmark.external import score_pose_csv

        if not (args.predictions and args.ground_truth):
            raise InputError("score: --predictions and --ground-truth go together")
        summary = score_pose_csv(args.predictions, args.ground_truth)
        for problem in summary.get("problems", []):
            print(f"warning: {problem}", file=sys.stderr)
    elif args.run_dir:
        from ntdmbench.benchmark.runner import score_run
        from ntdmbench.benchmark.store import FolderLock, RunDir, lock_name, writing_to

        run_dir = RunDir(args.run_dir)
        run_dir.config()  # not a run directory: one line, before anything is written
        with writing_to(run_dir.path), FolderLock(run_dir.path / lock_name(0, 1)):
            summary = score_run(run_dir)
    else:
        raise InputError("score: give a RUN_DIR, or --predictions PRED.csv --ground-truth GT.csv")
    _print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        print(f"written: {args.json}")
    return 0


def first_sentence(text: str | None, limit: int = 110) -> str:
    """A docstring's or comment's first sentence on one line, shortened to ``limit`` characters."""
    words = " ".join((text or "").strip().split("\n\n")[0].split()).replace("``", "")
    sentence = re.split(r"(?<=\.)\s", words, maxsplit=1)[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[:limit - 1].rstrip() + "…"


def _model_line(name: str) -> str:
    """The model class's docstring, else its module's (a dataclass's own doc is only its signature)."""
    from ntdmbench.models.registry import MODELS

    try:
        obj = MODELS.get(name)
    except ImportError as exc:
        return f"(cannot be imported: {exc})"
    doc = obj.__doc__ or ""
    if not doc or doc.startswith(f"{getattr(obj, '__name__', '')}("):
        doc = sys.modules[obj.__module__].__doc__ or ""
    return first_sentence(doc)


def _dataset_line(name: str) -> str:
    from ntdmbench.datasets.catalog import DATASETS

    entry = DATASETS.get(name)
    if not hasattr(entry, "family"):  # a plugin's dataset
        return first_sentence(entry.__doc__) or "registered outside the catalog, without a description"
    layout = "raw release" if entry.family.endswith("-raw") else "NeMo-prepared"
    what = {"pascal3d": "PASCAL3D+", "occluded-pascal3d": "Occluded PASCAL3D+", "oodcv": "OOD-CV"}[
        entry.family.removesuffix("-raw")]
    detail = (f", occlusion level L{entry.level}" if entry.level else "") + (
        f", {entry.nuisance} nuisance" if entry.nuisance and entry.nuisance != "iid" else
        ", in-distribution" if entry.nuisance == "iid" else "") + (
        f", {entry.options['subset']} subset" if entry.options.get("subset") else "")
    return f"{what} {entry.split}{detail} ({layout})"


def _suite_line(name: str) -> str:
    from ntdmbench.benchmark.suites.schema import SUITES_DIR

    comment = []
    for line in (SUITES_DIR / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# "))
    return first_sentence(" ".join(comment))


def _cmd_ls(args: argparse.Namespace) -> int:
    from ntdmbench.benchmark.metrics import METRICS
    from ntdmbench.benchmark.suites.schema import suite_names
    from ntdmbench.datasets.catalog import DATASETS
    from ntdmbench.models.registry import MODELS

    sections = {
        "models": lambda: [(n, _model_line(n)) for n in MODELS.names()],
        "datasets": lambda: [(n, _dataset_line(n)) for n in DATASETS.names()],
        "metrics": lambda: [(m.key, f"{m.description} ({m.task}, {m.unit}, "
                                    f"{'higher' if m.higher_is_better else 'lower'} is better)")
                            for m in METRICS.values()],
        "suites": lambda: [(n, _suite_line(n)) for n in suite_names()],
    }
    for name, items in sections.items():
        if args.what in (None, name):
            listed = items()
            width = max(len(k) for k, _ in listed)
            print(f"{name}:")
            for key, text in listed:
                print(f"  {key:<{width}}  {text}")
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    from tabulate import tabulate

    from ntdmbench.benchmark.metrics import METRICS

    keys = [k for k in METRICS if k in summary]
    rows = [["all", summary["n"], *[summary[k] for k in keys]]]
    rows += [[c, v["n"], *[v.get(k) for k in keys]] for c, v in summary.get("per_category", {}).items()]
    print(tabulate(rows, headers=["category", "n", *keys], floatfmt=".1f"))
    print(f"failed or missing predictions: {summary.get('n_failed', 0)} of {summary['n']}")
    if summary.get("n_unusable"):
        print(f"of which unusable samples (unreadable, incomplete or missing annotation or image): "
              f"{summary['n_unusable']}; see the run's log.txt")
    if summary.get("limit"):
        print(f"limited to the first {summary['limit']} samples (--limit)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless the default is "nothing" (None, False, [])
    or the help already says what happens without the option."""

    def _get_help_string(self, action: argparse.Action) -> str:
        nothing = action.default is None or action.default is False or action.default == [] \
            or action.default is argparse.SUPPRESS
        if nothing or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


# Help for options registered by modules whose own text says nothing yet (command path, dest) -> help.
EXTRA_HELP: dict[tuple[str, ...], str] = {
    ("data", "prepare", "source"): "which release to prepare",
    ("data", "synth", "preset"): "size: smoke (44 images, seconds), quick (592, ~15 s), full (28,800, ~45 min)",
    ("data", "synth", "out"): "output root; pascal3d/, oodcv/, CAD/ and contact_sheets/ are written under it",
    ("data", "synth", "seed"): "generator seed (the same seed gives byte-identical files)",
}


def explain(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    """Give every (sub)command the defaults-showing formatter and the ``EXTRA_HELP`` texts, recursively."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                explain(sub, (*path, name))
        elif not action.help and (*path, action.dest) in EXTRA_HELP:
            action.help = EXTRA_HELP[(*path, action.dest)]


def build_parser() -> argparse.ArgumentParser:
    from ntdmbench import __version__

    parser = argparse.ArgumentParser(prog="ntdmbench", description="Benchmark harness for robust 3D-aware vision: "
                                     "NTDM, NeMo and baselines on PASCAL3D+, Occluded PASCAL3D+ and OOD-CV.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="predict a dataset with a model, then score it")
    p.add_argument("--model", required=True, help="a registered model (ntdmbench ls models)")
    p.add_argument("--dataset", required=True, help="a catalog name (ntdmbench ls datasets), e.g. pascal3d/val")
    p.add_argument("--root", help="dataset root (default: the dataset's environment variable)")
    p.add_argument("--limit", type=int, help="only the first N samples (sorted ids; default: all)")
    p.add_argument("--out", default="runs", help="results folder")
    p.add_argument("--fresh", action="store_true", help="start over (old predictions are moved aside, not deleted)")
    p.add_argument("--keep-failures", action="store_true", help="on a rerun, keep failed samples instead of retrying")
    p.add_argument("--batch-size", type=int, default=8, help="samples per predict call")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seeds Python, NumPy and torch, and the run key")
    p.add_argument("--checkpoint", help="model checkpoint file (default: the model's untrained or built-in state)")
    p.add_argument("--model-args", help="constructor arguments, k=v,k2=v2 (default: the model's paper settings)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("score", help="re-score a run directory, or score an external predictions CSV")
    p.add_argument("run_dir", nargs="?", help="a run directory (runs/MODEL/DATASET/KEY) to re-score")
    p.add_argument("--predictions", help="OOD-CV challenge CSV: imgs,labels,azimuth,elevation,theta,distance (degrees)")
    p.add_argument("--ground-truth", help="ground-truth CSV in the same format")
    p.add_argument("--json", help="also write the summary as JSON here")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("ls", help="list models, datasets, metrics and suites, one line each")
    p.add_argument("what", nargs="?", choices=["models", "datasets", "metrics", "suites"],
                   help="only this section (default: all four)")
    p.set_defaults(func=_cmd_ls)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    explain(parser)
    return parser


class _StderrWarnings(logging.Handler):
    """The harness's warnings (a failed sample, a corrupt shard line) on whatever ``sys.stderr`` is now."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        print(f"ntdmbench: warning: {record.getMessage()}", file=sys.stderr)


def _warnings_to_stderr() -> None:
    log = logging.getLogger("ntdmbench")
    if not any(isinstance(h, _StderrWarnings) for h in log.handlers):
        log.addHandler(_StderrWarnings())


def main(argv: list[str] | None = None) -> int:
    """Run one command. The project's own errors end in one line and their exit code (2 for bad input,
    1 for a run with nothing to report); anything else is a bug and keeps its traceback."""
    from ntdmbench.benchmark.interrupt import remembering_sigint

    try:
        with remembering_sigint():
            args = build_parser().parse_args(argv)
            _warnings_to_stderr()
            return args.func(args)
    except NtdmbenchError as exc:
        if os.environ.get("NTDMBENCH_DEBUG"):
            raise
        message = " ".join(str(exc).split("\n"))
        print(f"ntdmbench: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ntdmbench: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
