"""The package's layers point down: models, NTDM, baselines and datasets never import the harness
(``benchmark``) or the reports, and the harness reaches the reports only from its command-line modules."""

import ast
import subprocess
import sys
from pathlib import Path

import ntdmbench

PACKAGE = Path(ntdmbench.__file__).parent
LOWER = ("models", "ntdm", "baselines", "datasets")


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, at any depth (lazy imports included)."""
    names = set()
    package = ".".join(("ntdmbench", *path.relative_to(root).with_suffix("").parts[:-1]))
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def offenders(folders, forbidden, allow=lambda path: False, root: Path = PACKAGE) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            if allow(path):
                continue
            bad = sorted(m for m in imported_modules(path, root) if m.startswith(forbidden))
            found += [f"{path.relative_to(root)} imports {m}" for m in bad]
    return found


def test_models_ntdm_baselines_and_datasets_import_neither_benchmark_nor_reports():
    assert offenders(LOWER, ("ntdmbench.benchmark", "ntdmbench.reports")) == []


def test_the_harness_reaches_the_reports_only_from_its_command_line():
    assert offenders(["benchmark"], ("ntdmbench.reports",), allow=lambda p: p.name == "cli.py") == []


def test_importing_every_model_module_loads_no_harness_module():
    code = ("import importlib, pkgutil, sys\n"
            "for pkg in ('ntdmbench.models', 'ntdmbench.ntdm', 'ntdmbench.baselines'):\n"
            "    for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + '.'):\n"
            "        importlib.import_module(info.name)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('ntdmbench.benchmark', 'ntdmbench.reports'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_scan_sees_lazy_and_relative_imports(tmp_path):
    probe = tmp_path / "ntdmbench" / "models" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from ntdmbench.benchmark import metrics\n    from ..reports import tables\n")
    found = offenders(["models"], ("ntdmbench.benchmark", "ntdmbench.reports"), root=tmp_path / "ntdmbench")
    assert "models/probe.py imports ntdmbench.benchmark.metrics" in found
    assert "models/probe.py imports ntdmbench.reports.tables" in found
