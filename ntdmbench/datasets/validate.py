"""``ntdmbench validate``: layout, required keys and per-split counts of one catalog dataset.

Every problem is one line naming the file it concerns; any problem makes the exit code non-zero.
Skips the real releases contain by design (``distance 0``, an empty viewpoint, NeMo's object 0 of another
class) are notes with their count, not problems.

What is counted, per family (the same unit a manifest gives):

- ``pascal3d-raw``: image names in the split lists; ``occluded-pascal3d-raw``: names in
  ``lists/{cate}FGLk_BGLk.txt``; ``oodcv-raw``: list entries;
- NeMo layouts (``pascal3d``, ``occluded-pascal3d``, ``oodcv``): usable samples.

Expected counts: a manifest (``--manifest FILE``, else ``{root}/manifest.json``) of the form
``{"format": "ntdmbench-manifest/1", "counts": {"pascal3d/val": 120, ...}}`` keyed by catalog name, written
by ``ntdmbench data prepare`` and by the synthetic generator; a manifest count must match exactly. Without
one, the published counts apply: exactly for raw layouts; as an upper bound for NeMo layouts, whose
preparation keeps one object per image with a valid pose (the shortfall is a note). OOD-CV has no
published count for these layouts: the count is reported only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ntdmbench.datasets.indexed import EXPECTED_SKIPS
from ntdmbench.datasets.occluded import PUBLISHED_COUNTS as OCCLUDED_COUNTS
from ntdmbench.datasets.records import CATEGORIES, DataError

PUBLISHED: dict[str, int] = {
    "pascal3d-raw/val": 10812, "pascal3d-raw/train": 11045,
    "pascal3d/val": 10812, "pascal3d/train": 11045,
    **{f"{family}/val/L{k}": OCCLUDED_COUNTS[f"FGL{k}_BGL{k}"]
       for family in ("occluded-pascal3d", "occluded-pascal3d-raw") for k in (1, 2, 3)},
}
"""Published image counts (OOD-CV-Pose and OccludedPASCAL3D READMEs)."""

UPPER_BOUND_FAMILIES = ("pascal3d", "occluded-pascal3d")
FOLDER = re.compile(r"^(?P<cate>[a-z]+?)(FGL\d_BGL\d)?$")


@dataclass
class Report:
    name: str
    root: Path | None = None
    count: int | None = None
    expected: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"problem: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes]
        verdict = "OK" if not self.problems else f"{len(self.problems)} problem(s)"
        where = f"at {self.root}" if self.root is not None else "(no usable root)"
        counted = f"{self.count} counted" if self.count is not None else "nothing counted"
        out.append(f"{self.name} {where}: {counted}{self.expected}; {verdict}")
        return out


def read_manifest(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
        return {str(k): int(v) for k, v in data["counts"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a manifest with a 'counts' object ({type(exc).__name__}: {exc})") from None


def validate(name: str, root: Path | None = None, manifest: Path | None = None) -> Report:
    """Check one catalog dataset; failures to open it are problems, not exceptions."""
    from ntdmbench.datasets.catalog import DATASETS, CatalogEntry, resolve_root

    entry = DATASETS.get(name)
    report = Report(name)
    try:
        if isinstance(entry, CatalogEntry):
            root = resolve_root(name, entry.family, root)
        report.root = root
        dataset = entry(root)
        ids = dataset.ids()
    except (DataError, FileNotFoundError) as exc:
        report.problems.append(str(exc))
        return report
    for reason, message in dataset.skips.items:
        (report.notes if reason in EXPECTED_SKIPS else report.problems).append(message)
    if not isinstance(entry, CatalogEntry):
        report.count = len(ids)
        return report
    family = entry.family
    if family in ("pascal3d", "occluded-pascal3d", "oodcv"):
        _check_nemo_layout(dataset, report)
        _check_family(dataset, family, report)
        report.count = len(ids)
    else:
        report.count = _listed_count(dataset, family, report)
    _check_count(report, family, root, manifest)
    return report


def _check_nemo_layout(dataset, report: Report) -> None:
    """Folder names under images/annotations/lists, and list entries that have no annotation."""
    for sub in ("images", "annotations", "lists"):
        folder = dataset.split_root / sub
        if not folder.is_dir():
            (report.notes if sub == "lists" else report.problems).append(f"{folder}: folder missing")
            continue
        for child in sorted(folder.iterdir()):
            match = FOLDER.match(child.name)
            if child.is_dir() and not (match and match["cate"] in CATEGORIES):
                report.problems.append(f"{child}: unexpected folder; expected {{category}}[FGLk_BGLk] "
                                       f"with category one of {', '.join(CATEGORIES)}")
    for category, folder in dataset.category_folders().items():
        anno_dir = dataset.split_root / "annotations" / folder
        for listing in sorted((dataset.split_root / "lists" / folder).glob("*.txt")):
            for line in listing.read_text().split():
                if not (anno_dir / f"{Path(line).stem}.npz").is_file():
                    report.problems.append(f"{listing}: lists {line} but {anno_dir}/{Path(line).stem}.npz is missing")
    missing = sorted(set(dataset.categories) - set(dataset.category_folders()))
    if missing:
        report.notes.append(f"{dataset.split_root}/annotations: no folder for {', '.join(missing)}")


def _check_family(dataset, family: str, report: Report) -> None:
    """A NeMo root of another dataset has the same folders; its annotations tell: OOD-CV's carry a
    ``nuisance`` key, PASCAL3D+'s do not. An empty selection is a problem too."""
    ids = dataset.ids()
    if not ids:
        report.problems.append(f"{dataset.split_root}: no usable samples for {report.name}")
        return
    with_nuisance = sum("nuisance" in dataset.load(i).tags for i in ids)
    if family != "oodcv" and with_nuisance:
        report.problems.append(f"{dataset.split_root}: {with_nuisance} of {len(ids)} annotations carry an OOD-CV "
                               f"'nuisance' key; this root holds OOD-CV, not {report.name}")


def _listed_count(dataset, family: str, report: Report) -> int:
    """Images named by the raw layouts' split lists."""
    if family == "pascal3d-raw":
        from ntdmbench.datasets.pascal3d import split_names

        for sub in ("Images", "Annotations", "Image_sets"):
            if not (dataset.root / sub).is_dir():
                report.problems.append(f"{dataset.root / sub}: folder missing")
        missing = sorted(set(dataset.categories) - set(dataset.present_categories()))
        if missing:
            report.notes.append(f"{dataset.root}/Annotations: no folder for {', '.join(missing)}")
        return sum(len(split_names(dataset.root, c, dataset.split, dataset.subset))
                   for c in dataset.present_categories())
    if family == "occluded-pascal3d-raw":
        for sub in ("images", "annotations", "lists"):
            if not (dataset.root / sub).is_dir():
                report.problems.append(f"{dataset.root / sub}: folder missing")
        present = [c for c in dataset.categories if (dataset.root / "images" / f"{c}{dataset.level}").is_dir()]
        for c in present:
            if not (dataset.root / "lists" / f"{c}{dataset.level}.txt").is_file():
                report.problems.append(f"{dataset.root}/lists/{c}{dataset.level}.txt: list file missing")
        return sum(len(dataset.names(c)) for c in present)
    from ntdmbench.datasets.oodcv import list_entries

    return sum(len(list_entries(dataset.root, c, dataset.nuisance)) for c in dataset.categories)


def _check_count(report: Report, family: str, root: Path, manifest: Path | None) -> None:
    path = manifest or root / "manifest.json"
    if manifest is not None or path.is_file():
        counts = read_manifest(path)
        if report.name in counts:
            expected = counts[report.name]
            report.expected = f", manifest {path} expects {expected}"
            if report.count != expected:
                report.problems.append(f"{path}: expects {expected} for {report.name}, found {report.count}")
            return
        others = sorted({n.split("/", 1)[0] for n in counts} - {report.name.split("/", 1)[0]})
        if others and not any(n.split("/", 1)[0] == report.name.split("/", 1)[0] for n in counts):
            report.problems.append(f"{path}: counts {', '.join(others)} datasets, not {report.name}; "
                                   f"this root holds another dataset")
            return
        report.notes.append(f"{path}: no count for {report.name}; checking published counts")
    published = PUBLISHED.get(report.name)
    if published is None:
        report.notes.append(f"no published count for {report.name}; {report.count} counted")
        return
    report.expected = f", published {published}"
    hint = " (a non-published root needs a manifest.json with its expected counts)"
    if family in UPPER_BOUND_FAMILIES:
        if report.count > published:
            report.problems.append(f"{root}: {report.count} samples for {report.name}, more than the "
                                   f"{published} published images{hint}")
        elif report.count < published:
            report.notes.append(f"{root}: {report.count} of {published} published images for {report.name} "
                                f"(NeMo keeps object 0 of each image with a valid pose)")
    elif report.count != published:
        report.problems.append(f"{root}: {report.count} images listed for {report.name}, published {published}{hint}")
