"""Kill safety, scripted: SIGKILL ``ntdmbench run`` and ``ntdmbench suite run smoke`` at random moments until
N kills have landed, let each finish, and compare with an uninterrupted run of the same command.

    PYTHONPATH=. python benchmarks/kill_loop.py --kills 20 [--work DIR] [--seed 0]

``run`` predicts the toy dataset of ``tests/toy_data.py`` with its slow oracle (200 samples with masks, a
pause per sample, so kills land mid-prediction); ``suite run smoke`` also generates its data, so kills land
in generation, prediction, scoring and the report. A kill that lands after the command has finished does
not count; when a command finishes before all kills have landed, the next round starts in a new folder.
Each round is compared with the reference: lost ids (in the reference, not in the shards), duplicated ids
(more than one successful record in the shards), differing rows (shard records, ``samples.jsonl`` rows and
``metrics.json`` values other than times). Prints one line per command and exits 1 on any difference.
Delays are drawn between 0.5 s and the reference's duration, lowered to the duration of any attempt that
finished first (a machine under less load), so that most kills land.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import toy_data
toy_data.register(Path(sys.argv[1]), n=int(sys.argv[2]))
from ntdmbench.benchmark.cli import main
raise SystemExit(main(sys.argv[3:]))
"""
TIMES = {"time_s", "time_per_sample_s", "wall_s"}


def _rows(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _strip(value):
    """A result without its wall-clock times (they differ between any two runs)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def compare(ref: Path, out: Path) -> dict[str, int]:
    """Lost, duplicated and differing records of every run folder under ``out`` against ``ref``."""
    counts = Counter(lost=0, duplicated=0, differing=0, runs=0)
    for config in sorted(ref.rglob("config.yaml")):
        rel = config.parent.relative_to(ref)
        mine = out / rel
        counts["runs"] += 1
        ref_records = {r["id"]: r for s in sorted((config.parent / "predictions").glob("shard-*.jsonl"))
                       for r in _rows(s)}
        records = [r for s in sorted((mine / "predictions").glob("shard-*.jsonl")) for r in _rows(s)]
        ok = Counter(r["id"] for r in records if not r.get("failure"))
        counts["duplicated"] += sum(n - 1 for n in ok.values() if n > 1)
        by_id = {r["id"]: r for r in records if not r.get("failure")}
        counts["lost"] += sum(1 for i in ref_records if i not in by_id)
        counts["differing"] += sum(1 for i, r in ref_records.items() if i in by_id and _strip(by_id[i]) != _strip(r))
        for name in ("samples.jsonl", "metrics.json"):
            a, b = config.parent / name, mine / name
            if not b.is_file():
                counts["differing"] += 1
                continue
            if name.endswith(".jsonl"):
                ra, rb = _rows(a), _rows(b)
                counts["differing"] += sum(x != y for x, y in zip(map(_strip, ra), map(_strip, rb))) + abs(len(ra) - len(rb))
            elif _strip(json.loads(a.read_text())) != _strip(json.loads(b.read_text())):
                counts["differing"] += 1
    return dict(counts)


def kill_loop(command, ref: Path, work: Path, kills: int, span: tuple[float, float], rng: random.Random,
              env: dict[str, str]) -> dict[str, int]:
    """SIGKILL ``command(out)`` after a random delay until ``kills`` have landed; compare every round."""
    totals = Counter(kills=0, rounds=0, lost=0, duplicated=0, differing=0)
    low, high = span
    while totals["kills"] < kills:
        out = work / f"round-{totals['rounds']}"
        while True:
            proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            start = time.perf_counter()
            try:
                code = proc.wait(timeout=rng.uniform(low, high)) if totals["kills"] < kills else proc.wait()
                high = max(2 * low, min(high, time.perf_counter() - start))  # it was faster than the reference
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                proc.stderr.close()
                totals["kills"] += 1
                continue
            error = proc.stderr.read().decode()
            proc.stderr.close()
            if code != 0:
                raise SystemExit(f"{' '.join(map(str, command(out)))} exited {code}: {error[-2000:]}")
            break
        found = compare(ref, out)
        if found["runs"] == 0:
            raise SystemExit(f"no run folder to compare under {ref}")
        for key in ("lost", "duplicated", "differing"):
            totals[key] += found[key]
        totals["rounds"] += 1
    return dict(totals)


def checkpoint_hashes(out: Path) -> dict[str, str]:
    from ntdmbench.models.predictor import sha256_file

    return {str(p.relative_to(out)): sha256_file(p) for p in sorted((out / "checkpoints").rglob("*.pth"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ntdmbench-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    driver = work / "driver.py"
    driver.write_text(DRIVER.format(tests=str(REPO / "tests")))
    failed = False

    def run_cmd(out: Path) -> list[str]:
        return [sys.executable, str(driver), str(work / "toy"), str(args.samples), "run", "--model", "slow-oracle",
                "--dataset", "toy/val", "--batch-size", "2", "--model-args", "delay=0.03", "--no-progress",
                "--out", str(out)]

    def suite_cmd(out: Path) -> list[str]:  # its own data root per folder: kills land in generation too
        return [sys.executable, "-m", "ntdmbench", "suite", "run", "smoke", "--root", str(out / "data"),
                "--out", str(out), "--no-progress"]

    for name, command in (("run", run_cmd), ("suite run smoke", suite_cmd)):
        ref = work / name.replace(" ", "-") / "reference"
        start = time.perf_counter()
        subprocess.run(command(ref), env=env, check=True, capture_output=True)
        took = time.perf_counter() - start
        totals = kill_loop(command, ref, work / name.replace(" ", "-"), args.kills, (0.5, took), rng, env)
        if name.startswith("suite"):
            last = work / name.replace(" ", "-") / f"round-{totals['rounds'] - 1}"
            totals["differing"] += checkpoint_hashes(ref) != checkpoint_hashes(last)
        print(f"{name}: {totals['kills']} SIGKILLs over {totals['rounds']} round(s) "
              f"(uninterrupted {took:.1f} s): {totals['lost']} lost, {totals['duplicated']} duplicated, "
              f"{totals['differing']} differing", flush=True)
        failed |= any(totals[k] for k in ("lost", "duplicated", "differing"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
