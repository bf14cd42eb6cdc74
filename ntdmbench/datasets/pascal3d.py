"""The raw PASCAL3D+ release 1.1: ``Annotations/{cls}_{subset}/{name}.mat`` records and split lists.

Layout read (``root`` = ``PASCAL3D+_release1.1``):

- ``Image_sets/{cls}_imagenet_{train|val}.txt``: ImageNet image names, no extension;
- ``PASCAL/VOCdevkit/VOC2012/ImageSets/Main/{cls}_{train|val}.txt``: the PASCAL subset's split (label 1 = present);
- ``Images/{cls}_imagenet/{name}.JPEG`` / ``Images/{cls}_pascal/{name}.jpg``;
- ``Annotations/{cls}_{subset}/{name}.mat``: one struct ``record`` (``imgsize`` = [w, h, d], ``objects``);
  per object ``class``, ``bbox`` [x1 y1 x2 y2], ``cad_index`` (1-based), ``truncated/occluded/difficult`` and
  ``viewpoint`` with ``azimuth, elevation, theta`` in **degrees** (empty -> ``*_coarse``), ``distance``,
  ``focal``, ``px``, ``py``, ``viewport``;
- ``CAD/{cls}/NN.off``: when present, ``cad_index`` must name one of them.

An object with ``distance <= 0`` has no valid 3D annotation and is a counted skip, never a pose.
Sample ids are ``{cls}/{name}_{obj:02d}``, which is also the sample name NeMo's refactored preparation
writes, so raw, prepared and occluded samples of one object share an id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ntdmbench.datasets.indexed import Entry, IndexedDataset, SampleSkip, Skips
from ntdmbench.datasets.records import CATEGORIES, DataError, Pose, Sample

MESH_LEN: dict[str, int] = {
    "aeroplane": 8, "bicycle": 6, "boat": 6, "bottle": 8, "bus": 6, "car": 10,
    "chair": 10, "diningtable": 6, "motorbike": 5, "sofa": 6, "train": 4, "tvmonitor": 4,
}
"""CAD models per category in the release (NeMo's ``MESH_LEN``)."""

SUBSETS = {"imagenet": ".JPEG", "pascal": ".jpg"}
VIEW_KEYS = ("distance", "focal", "px", "py", "viewport")


def read_record(path: Path) -> dict[str, Any]:
    """The ``record`` struct of one annotation file as nested dicts."""
    import scipy.io

    if not path.is_file():
        raise SampleSkip(f"{path}: annotation file not found", "image without annotation")
    try:
        mat = scipy.io.loadmat(path, simplify_cells=True)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError or zlib errors on bad files
        raise SampleSkip(f"{path}: cannot read .mat ({type(exc).__name__}: {exc})", "unreadable annotation") from None
    record = mat.get("record")
    if not isinstance(record, dict):
        raise SampleSkip(f"{path}: no 'record' struct", "missing key")
    return record


def record_objects(record: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    objects = record.get("objects")
    if objects is None:
        raise SampleSkip(f"{path}: record has no 'objects'", "missing key")
    if isinstance(objects, dict):
        return [objects]
    return [o for o in np.atleast_1d(np.asarray(objects, dtype=object)) if isinstance(o, dict)]


def _scalar(value: Any) -> float | None:
    """A .mat field as one float; ``None`` when the field is empty."""
    arr = np.asarray(value, dtype=float).ravel()
    return float(arr[0]) if arr.size else None


def parse_object(obj: dict[str, Any], index: int, path: Path) -> tuple[Pose, tuple[float, ...], int]:
    """Pose (radians), bbox ``(x1, y1, x2, y2)`` and 1-based ``cad_index`` of one object."""
    where = f"{path}: object {index}"
    for key in ("bbox", "viewpoint", "cad_index"):
        if key not in obj:
            raise SampleSkip(f"{where}: missing key '{key}'", "missing key")
    view = obj["viewpoint"]
    if not isinstance(view, dict) or not view:
        raise SampleSkip(f"{where}: empty viewpoint", "empty viewpoint")
    angles = []
    for key in ("azimuth", "elevation", "theta"):
        value = _scalar(view[key]) if key in view else None
        if value is None and f"{key}_coarse" in view:
            value = _scalar(view[f"{key}_coarse"])
        if value is None or not np.isfinite(value):
            raise SampleSkip(f"{where}: viewpoint has no {key} (nor {key}_coarse)", "empty viewpoint")
        angles.append(value)
    fields = {}
    for key in VIEW_KEYS:
        value = _scalar(view[key]) if key in view else None
        if value is None:
            raise SampleSkip(f"{where}: viewpoint has no '{key}'", "missing key")
        fields[key] = value
    if not fields["distance"] > 0:
        raise SampleSkip(f"{where}: distance {fields['distance']:g}, no valid 3D annotation", "distance 0")
    bbox = np.asarray(obj["bbox"], dtype=float).ravel()
    cad = _scalar(obj["cad_index"])
    if bbox.size != 4 or cad is None:
        raise SampleSkip(f"{where}: bbox must have 4 values and cad_index one", "missing key")
    azimuth, elevation, theta = np.deg2rad(angles)
    pose = Pose(float(azimuth), float(elevation), float(theta), fields["distance"],
                (fields["px"], fields["py"]), fields["focal"], fields["viewport"])
    return pose, tuple(float(v) for v in bbox), int(cad)


def object_class(obj: dict[str, Any]) -> str:
    return str(obj.get("class", "")).strip()


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def split_names(root: Path, category: str, split: str, subset: str) -> list[str]:
    """Image names of one category's split (ImageNet list, or VOC2012 label column for PASCAL)."""
    if subset == "imagenet":
        return read_lines(root / "Image_sets" / f"{category}_imagenet_{split}.txt")
    import pandas as pd

    path = root / "PASCAL" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main" / f"{category}_{split}.txt"
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    table = pd.read_csv(path, sep=r"\s+", header=None, names=["name", "label"], dtype={"name": str})
    return table.loc[table["label"] == 1, "name"].tolist()


def cad_count(root: Path, category: str) -> int | None:
    """Number of ``CAD/{cls}/NN.off`` meshes (NeMo's rule: names under 7 characters), None without CAD/."""
    folder = root / "CAD" / category
    if not folder.is_dir():
        return None
    return sum(1 for p in folder.iterdir() if ".off" in p.name and len(p.name) < 7)


def object_samples(record: dict[str, Any], path: Path, category: str, objects: str | Sequence[int],
                   skips: Skips, make_id, cad_limit: int | None) -> Iterable[tuple[str, Pose, tuple, int]]:
    """The usable objects of ``category`` in one record: ``"all"`` of them, NeMo's ``"first"`` rule
    (object 0 only, and only when it is of this category), or the listed object indices."""
    found = record_objects(record, path)
    if objects == "all":
        indices: Sequence[int] = range(len(found))
    else:
        indices = [0] if objects == "first" else objects
    for i in indices:
        try:
            if i >= len(found):
                raise SampleSkip(f"{path}: no object {i} (record has {len(found)})", "listed object missing")
            if object_class(found[i]) != category:
                if objects == "all":
                    continue
                raise SampleSkip(f"{path}: object {i} is a {object_class(found[i]) or '?'}, not a {category}",
                                 "object of another class")
            pose, bbox, cad = parse_object(found[i], i, path)
            if cad_limit is not None and not 1 <= cad <= cad_limit:
                raise SampleSkip(f"{path}: object {i}: cad_index {cad} outside CAD/{category} (1..{cad_limit})",
                                 "cad_index out of range")
        except DataError as exc:
            skips.add(exc, make_id(i))
            continue
        yield make_id(i), pose, bbox, cad


def index_record(entries: dict[str, Entry], skips: Skips, *, category: str, name: str, image: Path, mat: Path,
                 objects: str | Sequence[int], cad_limit: int | None, tags: dict[str, str],
                 mask_source: Any = None) -> None:
    """Add the usable objects of one image's ``.mat`` record to ``entries``; a bad image is a counted skip."""
    try:
        if not image.is_file():
            raise SampleSkip(f"{image}: listed image not found", "missing image")
        found = list(object_samples(read_record(mat), mat, category, objects, skips,
                                    lambda i: f"{category}/{name}_{i:02d}", cad_limit))
    except DataError as exc:
        skips.add(exc)
        return
    for sample_id, pose, bbox, cad in found:
        entries[sample_id] = Entry(Sample(sample_id, category, pose, image_path=image, bbox=bbox, cad_index=cad,
                                          tags=dict(tags)), mask_source)


class Pascal3DRaw(IndexedDataset):
    """Objects of the raw release, one sample per annotated object with a valid viewpoint."""

    format_version = "1"

    def __init__(self, root: Path, split: str, *, subset: str = "imagenet", objects: str = "all",
                 categories: Iterable[str] = CATEGORIES, name: str | None = None):
        if subset not in SUBSETS:
            raise ValueError(f"PASCAL3D+ subset must be one of {sorted(SUBSETS)}, got {subset!r}")
        if objects not in ("all", "first"):
            raise ValueError(f"objects must be 'all' or 'first', got {objects!r}")
        super().__init__(name or f"pascal3d-raw/{split}", root)
        self.split, self.subset, self.objects = split, subset, objects
        self.categories = tuple(categories)
        self.tags = {"dataset": "pascal3d", "split": split, "level": "L0", "subset": subset}
        if not (self.root / "Annotations").is_dir():
            raise DataError(f"{self.root}: no Annotations/ folder; expected the PASCAL3D+_release1.1 folder")

    def present_categories(self) -> list[str]:
        """Categories with an ``Annotations/{cls}_{subset}`` folder (a partial root holds fewer than 12)."""
        found = [c for c in self.categories if (self.root / "Annotations" / f"{c}_{self.subset}").is_dir()]
        if not found:
            raise DataError(f"{self.root}/Annotations: no {{category}}_{self.subset} folder")
        return found

    def _build(self, skips: Skips) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        ext = SUBSETS[self.subset]
        for category in self.present_categories():
            folder = f"{category}_{self.subset}"
            limit = cad_count(self.root, category)
            for name in split_names(self.root, category, self.split, self.subset):
                index_record(entries, skips, category=category, name=name,
                             image=self.root / "Images" / folder / f"{name}{ext}",
                             mat=self.root / "Annotations" / folder / f"{name}.mat",
                             objects=self.objects, cad_limit=limit, tags=self.tags)
        return entries
