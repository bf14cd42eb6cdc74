"""Kill safety under 20 random SIGKILLs of `run` and of `suite run smoke` (benchmarks/kill_loop.py): nothing
lost, nothing duplicated, nothing different from an uninterrupted run. Minutes: marked slow."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.slow
def test_twenty_sigkills_lose_duplicate_and_change_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "kill_loop.py"), "--kills", "20", "--work",
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=3600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all("20 SIGKILLs" in line and "0 lost, 0 duplicated, 0 differing" in line
                                   for line in lines)
