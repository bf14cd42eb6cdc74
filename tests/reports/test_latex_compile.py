"""Every LaTeX table of the smoke suite compiles with pdflatex in a one-column and a two-column paper,
with no LaTeX error and no overfull box wider than 1 pt; the measured widths fit the line.

Skipped where ``pdflatex`` is missing (``.ci/run`` installs it, so CI runs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ntdmbench.reports import tables

pytestmark = pytest.mark.skipif(shutil.which("pdflatex") is None,
                                reason="pdflatex is not installed (.ci/run installs TeX Live; apt-get install "
                                       "texlive-latex-base texlive-latex-recommended texlive-latex-extra)")

# Logs each fitted table's natural width and the line it must fit (the generated \resizebox is kept).
MEASURE = r"""\makeatletter
\let\ntdm@resizebox\resizebox
\renewcommand{\resizebox}[3]{\sbox\z@{#3}%
  \typeout{NTDM-WIDTH natural=\the\wd\z@\space line=\the\linewidth}\ntdm@resizebox{#1}{#2}{#3}}
\makeatother
"""
FILLER = "Text around the table, as in a paper. " * 20


def paper(tex_files: list[Path], twocolumn: bool) -> str:
    """A document that inputs every table between paragraphs, with the packages the tables name."""
    packages = re.search(r"\\usepackage\{([^}]*)\}", tex_files[0].read_text()).group(1)
    body = "\n\n".join(f"{FILLER}\n\n\\input{{{p.as_posix()}}}" for p in tex_files)
    return (f"\\documentclass{'[twocolumn]' if twocolumn else ''}{{article}}\n\\usepackage{{{packages}}}\n"
            f"{MEASURE}\\begin{{document}}\n{body}\n\n{FILLER}\n\\end{{document}}\n")


def compile_pdf(tex: str, folder: Path, name: str) -> tuple[Path, str]:
    """pdflatex twice (labels settle); returns the PDF and the last log."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tex").write_text(tex)
    for _ in range(2):
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"], cwd=folder,
                              capture_output=True, text=True, timeout=120)
    log = (folder / f"{name}.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    return folder / f"{name}.pdf", log


def problems(log: str) -> list[str]:
    """LaTeX errors, overfull boxes wider than 1 pt and floats too large for the page."""
    found = [line for line in log.splitlines() if line.startswith("! ")]
    found += [m.group(0) for m in re.finditer(r"Overfull \\[hv]box \(([\d.]+)pt too \w+\)[^\n]*", log)
              if float(m.group(1)) > 1.0]
    found += re.findall(r"Float too large for page[^\n]*", log)
    return found


def widths(log: str) -> list[tuple[float, float]]:
    """(natural width, line width) in pt of every fitted table, in document order."""
    return [(float(a), float(b)) for a, b in re.findall(r"NTDM-WIDTH natural=([\d.]+)pt line=([\d.]+)pt", log)]


@pytest.mark.parametrize("twocolumn", [False, True], ids=["one-column", "two-column"])
@pytest.mark.parametrize("columns", ["paper", "all"])
def test_smoke_tables_compile_and_fit(smoke_suite, tmp_path, twocolumn, columns):
    data = tables.load(smoke_suite)
    files = []
    for t in data:
        path = tmp_path / f"{t.id}.tex"
        path.write_text(tables.to_latex(t, full=columns == "all", ci=columns == "all"))
        files.append(path)
    pdf, log = compile_pdf(paper(files, twocolumn), tmp_path / "doc", "paper")
    assert pdf.stat().st_size > 0
    assert problems(log) == []
    measured = widths(log)
    assert len(measured) == len(data)
    # Table 1 spans both columns of a two-column paper; the others fit one column
    lines = [line for _, line in measured]
    assert lines[0] == max(lines) and (not twocolumn or lines[1] < lines[0] / 1.8)


def test_shipped_report_tex_files_compile(smoke_suite, tmp_path):
    files = sorted((smoke_suite / "tables").glob("*.tex"))
    assert [f.stem for f in files] == ["table1", "table2", "table3"]
    for text in (f.read_text() for f in files):
        assert text.count(r"\caption{") == 1 and text.count(r"\label{") == 1 and "Table 1:" not in text
    _, log = compile_pdf(paper(files, True), tmp_path, "report")
    assert problems(log) == []


def test_labels_with_latex_specials_compile(smoke_suite, tmp_path):
    table3 = tables.load(smoke_suite)[2]
    for row, label in zip(table3.rows, ["full NTDM", "single α_b", "w/o BG & co_1 (50 % #2, ~$)"]):
        row.label = label
    path = tmp_path / "table3.tex"
    path.write_text(tables.to_latex(table3, ci=True))
    _, log = compile_pdf(paper([path], True), tmp_path / "doc", "labels")
    assert problems(log) == []
