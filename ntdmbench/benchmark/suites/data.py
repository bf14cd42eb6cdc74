"""Where a suite's data lives, and the synthetic preset generated there once."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from ntdmbench.benchmark.distributed import Dist
from ntdmbench.benchmark.suites.schema import Suite, SuiteError


def default_root(suite: Suite) -> Path | None:
    """Synthetic suites keep their data in ``data/synth-PRESET``; real ones read the env variables."""
    return Path("data") / f"synth-{suite.synthetic}" if suite.synthetic else None


def dataset_root(suite: Suite, dataset: str, root: Path | None) -> str | None:
    """The root for one catalog dataset: ``ROOT/roots[family]``; None falls back to its env variable."""
    from ntdmbench.datasets.catalog import DATASETS

    family = getattr(DATASETS.get(dataset), "family", dataset.split("/", 1)[0])
    sub = suite.roots.get(family)
    if sub is None and family.startswith("occluded-"):
        sub = suite.roots.get(family.removeprefix("occluded-"))
    if root is None:
        return sub if sub is not None and Path(sub).is_absolute() else None
    return str(root / sub) if sub is not None else str(root)


def ensure_data(suite: Suite, root: Path | None, dist: Dist, log) -> float:
    """Generate the suite's synthetic preset under ``root`` unless it is there; returns seconds spent."""
    if suite.synthetic is None or root is None:
        return 0.0
    start = time.perf_counter()
    meta = root / "synthetic.json"
    if dist.is_main:
        if meta.is_file():
            from ntdmbench.datasets.synthetic.generate import FORMAT, PRESETS

            found = json.loads(meta.read_text())
            wanted = json.loads(json.dumps(dataclasses.asdict(PRESETS[suite.synthetic])))
            if found.get("format") != FORMAT:
                raise SuiteError(f"--root {root}: synthetic benchmark {found.get('format')!r} from an older "
                                 f"generator (this one writes {FORMAT!r}); delete it or give another --root")
            if found.get("preset") != wanted or found.get("seed") != suite.data_seed:
                raise SuiteError(f"--root {root}: holds another synthetic benchmark than preset "
                                 f"{suite.synthetic!r} with seed {suite.data_seed}; give another --root")
            log(f"data: synthetic preset {suite.synthetic!r} already in {root}")
        elif root.exists() and any(root.iterdir()):
            raise SuiteError(f"--root {root}: not empty and not a synthetic benchmark (no synthetic.json); "
                             f"give an empty or new folder")
        else:
            log(f"data: generating synthetic preset {suite.synthetic!r} under {root}")
            _generate_into_place(root, suite.synthetic, suite.data_seed)
    dist.barrier()
    return time.perf_counter() - start


def _generate_into_place(root: Path, preset: str, seed: int) -> None:
    """Generate into ``.ROOTNAME.partial`` beside ``root`` and rename it into place when complete, so an
    interrupted generation leaves no half-made root behind and the rerun simply starts it again."""
    from ntdmbench.datasets.synthetic.generate import generate

    partial = root.with_name(f".{root.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # an earlier interrupted generation: ours, and never complete
    generate(partial, preset, seed)
    if root.exists():
        root.rmdir()  # checked empty above
    partial.rename(root)
