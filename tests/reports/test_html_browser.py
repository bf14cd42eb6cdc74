"""``tables.html`` of the smoke suite in a real headless browser at 1280 px: the page does not scroll
sideways, a wide table scrolls inside its own box, and each group header spans (and is centred over)
exactly its group's columns.

Skipped where no Chromium is installed (CI leaves it out; ``apt-get install chromium``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]

# Appended to a copy of the page: measures the layout and writes it into the DOM, which --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const box = e => e.getBoundingClientRect();
  const out = {page: document.documentElement.scrollWidth, window: window.innerWidth, tables: []};
  for (const t of document.querySelectorAll('table')) {
    const wrap = t.parentElement, groups = [];
    for (const head of t.querySelectorAll('th.group')) {
      const rows = [...head.closest('thead, tbody').rows], k = rows.indexOf(head.parentElement);
      let first = 0;
      for (const c of head.parentElement.cells) { if (c === head) break; first += c.colSpan; }
      const cells = [...rows[k + 1].cells].slice(first, first + head.colSpan);
      groups.push({head: [box(head).left, box(head).right], cols: [box(cells[0]).left, box(cells.at(-1)).right],
                   align: getComputedStyle(head).textAlign});
    }
    out.tables.push({id: t.id, width: box(t).width, wrap: box(wrap).width, overflow: getComputedStyle(wrap).overflowX,
                     fontPx: parseFloat(getComputedStyle(t).fontSize), groups});
  }
  const pre = document.createElement('pre'); pre.id = 'geometry'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def browse(page: Path, *args: str, width: int = 1280) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900", *args,
                               page.as_uri()], capture_output=True, text=True, timeout=120)


def geometry(html_file: Path, tmp_path: Path, width: int = 1280) -> dict:
    probe = tmp_path / "probe.html"
    probe.write_text(html_file.read_text().replace("</body>", PROBE + "</body>"))
    dom = browse(probe, "--dump-dom", "--virtual-time-budget=5000", width=width).stdout
    found = re.search(r'<pre id="geometry">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_smoke_tables_read_well_at_1280_px(smoke_suite, tmp_path):
    g = geometry(smoke_suite / "tables.html", tmp_path)
    assert g["page"] <= g["window"]  # the page itself never scrolls sideways
    assert [t["id"] for t in g["tables"]] == ["table1", "table2", "table3"]
    for t in g["tables"]:
        assert t["overflow"] == "auto" and t["wrap"] <= g["window"] and t["fontPx"] >= 12
        for group in t["groups"]:
            (head_l, head_r), (cols_l, cols_r) = group["head"], group["cols"]
            assert abs(head_l - cols_l) <= 1 and abs(head_r - cols_r) <= 1 and group["align"] == "center"
    assert sum(len(t["groups"]) for t in g["tables"]) == 4 + 3  # Table 1's four groups, Table 2's three blocks


def test_a_wide_table_scrolls_inside_its_box(smoke_suite, tmp_path):
    g = geometry(smoke_suite / "tables.html", tmp_path, width=600)
    table1 = g["tables"][0]
    assert g["page"] <= g["window"] and table1["width"] > table1["wrap"]  # it scrolls, the page does not
