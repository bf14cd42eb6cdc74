"""``ntdmbench table RUN_DIR --format md|latex|csv|html``; the report modules load only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ntdmbench.errors import InputError

FORMATS = ("md", "latex", "csv", "html")


def _cmd_table(args: argparse.Namespace) -> int:
    from ntdmbench.benchmark.suites.index import SuiteIndex
    from ntdmbench.reports import tables as T

    tables = T.load(args.run_dir)
    if args.table:
        tables = [t for t in tables if t.id in args.table.split(",")]
        if not tables:
            raise InputError(f"--table {args.table}: no such table in {args.run_dir}")
    text = T.render(tables, args.format, title=SuiteIndex.read(args.run_dir).title, columns=args.columns, ci=args.ci)
    if args.out:
        Path(args.out).write_text(text)
        print(f"written: {args.out}")
    else:
        print(text, end="")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("table", help="the paper's tables from a suite run's result files")
    p.add_argument("run_dir", help="a suite run directory (runs/suites/NAME)")
    p.add_argument("--format", default="md", choices=FORMATS,
                   help="md, latex (booktabs, fitted to the line; needs booktabs and graphicx), csv (long form) or html")
    p.add_argument("--table", help="only these table ids, comma-separated (default: every table)")
    p.add_argument("--columns", choices=("paper", "all"),
                   help="paper: the paper's columns ('w/o', no iid, no Δ); all: every condition, mean and Δ "
                        "(default: paper for latex, all for the others)")
    p.add_argument("--ci", action="store_true", help="add ± half the 95 %% interval to every value (md, latex, html)")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=_cmd_table)
