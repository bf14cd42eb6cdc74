"""The smoke suite run once per test session: real tables for the LaTeX compile and browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_suite(tmp_path_factory) -> Path:
    """``runs/suites/smoke`` after ``ntdmbench suite run smoke`` (oracle and random; seconds)."""
    from ntdmbench.benchmark.suites.cli import write_report
    from ntdmbench.benchmark.suites.run import run_suite

    base = tmp_path_factory.mktemp("smoke-suite")
    suite_run = run_suite("smoke", str(base / "data"), str(base / "runs"), progress=False)
    write_report(suite_run.dir)
    return suite_run.dir
