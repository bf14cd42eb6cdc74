"""``ntdmbench suite run SUITE`` and ``ntdmbench suite show SUITE``: the suite's stages, then its report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from ntdmbench.benchmark.suites.schema import load_suite, suite_names


def write_report(suite_dir: Path) -> Path:
    """The report from the suite's ``index.json``, its time recorded back into the index."""
    from ntdmbench.benchmark.suites.index import SuiteIndex
    from ntdmbench.reports.report import write_report as write

    start = time.perf_counter()
    report = write(suite_dir)
    index = SuiteIndex.read(suite_dir)
    index.timing_s["report"] = time.perf_counter() - start
    index.timing_s["total"] = index.timing_s.get("total_before_report", 0.0) + index.timing_s["report"]
    index.write(suite_dir)
    return report


def _cmd_run(args: argparse.Namespace) -> int:
    from ntdmbench.benchmark.suites.run import run_suite

    suite_run = run_suite(
        args.suite, args.root, args.out, args.device, args.set, _split(args.tables), _split(args.models),
        args.limit, progress=not args.no_progress)
    if not suite_run.dist.is_main:
        return 0
    report = write_report(suite_run.dir)
    failures = suite_run.index.failures
    if failures:
        rows = sorted({f"{f.row} ({f.stage})" for f in failures})
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
    r.add_argument("--root", help="data root (synthetic suites: generated here; default: data/synth-PRESET)")
    r.add_argument("--out", default="runs", help="runs, checkpoints and suites/NAME/report.md go here")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: each rank's LOCAL_RANK GPU)")
    r.add_argument("--tables", help="only these table ids, comma-separated (default: every table)")
    r.add_argument("--models", help="only these rows, comma-separated (default: every row)")
    r.add_argument("--limit", type=int,
                   help="only the first N samples of each condition, a quick try (default: all); every output says so")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite key, e.g. models.ntdm.args.steps=30 (repeatable)")
    r.add_argument("--no-progress", action="store_true", help="no per-run progress bars (the suite's own lines stay)")
    r.set_defaults(func=_cmd_run)
    s = sub.add_parser("show", help="print a suite with extends and --set resolved")
    s.add_argument("suite", help="a shipped suite or a .yaml path")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite key (repeatable)")
    s.set_defaults(func=_cmd_show)
