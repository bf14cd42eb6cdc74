"""OOD-CV pose data as released (``pose.zip``), and the challenge CSV label format.

Raw layout read (``root`` = ``ood_cv``):

- ``lists/{cate}_{nuisance}.txt`` and ``lists/{cate}_all.txt``, lines ``"{img_name} {obj_id}"`` (0-based object);
  a category without a list for a nuisance has no samples there; ``iid`` = ``_all`` minus every nuisance list;
- ``images/{cate}/{img}.JPEG`` and ``annotations/{cate}/{img}.mat`` (PASCAL3D+ ``record`` format, degrees).

Challenge CSV (ROBIN): ``imgs,labels,azimuth,elevation,theta,distance`` with angles in degrees;
``read_pose_csv`` returns them in radians. Ids are ``{cate}/{img}_{obj:02d}``, the name NeMo's preparation writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ntdmbench.datasets.indexed import Entry, IndexedDataset, Skips
from ntdmbench.datasets.pascal3d import index_record, read_lines
from ntdmbench.datasets.records import DataError
from ntdmbench.errors import MissingFileError

OODCV_CATEGORIES: tuple[str, ...] = (
    "aeroplane", "bicycle", "boat", "bus", "car", "chair", "diningtable", "motorbike", "sofa", "train",
)
NUISANCES: tuple[str, ...] = ("context", "pose", "shape", "texture", "weather")
"""The nuisance splits of NeMo's OOD-CV config; ``iid`` holds the rest."""

CSV_COLUMNS = ("imgs", "labels", "azimuth", "elevation", "theta", "distance")
CSV_ANGLES = ("azimuth", "elevation", "theta")


def read_pose_csv(path: str | Path) -> pd.DataFrame:
    """A challenge pose label CSV with its angles in radians (the file holds degrees).

    Empty angle cells stay NaN (the scorer counts them as failures); any other non-number is an error.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"imgs": str, "labels": str})
    except FileNotFoundError:
        raise MissingFileError(f"{path}: pose CSV not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse CSV ({exc})") from None
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}")
    out = table.loc[:, list(CSV_COLUMNS)].copy()
    for column in CSV_ANGLES + ("distance",):
        values = pd.to_numeric(out[column], errors="coerce")
        bad = values.isna() & out[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: row {row + 2}: {column} {out[column].iloc[row]!r} is not a number")
        out[column] = np.deg2rad(values) if column in CSV_ANGLES else values.astype(float)
    return out


def list_entries(root: Path, category: str, nuisance: str) -> list[tuple[str, int]]:
    """``(img, obj_id)`` of one category's nuisance list (``iid``: all minus the nuisance lists)."""
    def read(n: str) -> list[tuple[str, int]]:
        path = root / "lists" / f"{category}_{n}.txt"
        if not path.is_file():
            return []
        pairs = []
        for line in read_lines(path):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataError(f"{path}: line {line!r} is not '{{img_name}} {{obj_id}}'")
            pairs.append((parts[0], int(parts[1])))
        return pairs

    if nuisance != "iid":
        return read(nuisance)
    taken = {pair for n in NUISANCES for pair in read(n)}
    return [pair for pair in read("all") if pair not in taken]


class OodcvRaw(IndexedDataset):
    """One nuisance split of the released OOD-CV pose data (original image coordinates)."""

    format_version = "1"

    def __init__(self, root: Path, nuisance: str, *, categories: Iterable[str] = OODCV_CATEGORIES,
                 name: str | None = None):
        if nuisance not in NUISANCES + ("iid",):
            raise ValueError(f"OOD-CV nuisance must be one of {', '.join(NUISANCES + ('iid',))}, got {nuisance!r}")
        super().__init__(name or f"oodcv-raw/test/{nuisance}", root)
        self.nuisance, self.categories = nuisance, tuple(categories)
        self.tags = {"dataset": "oodcv", "split": "test", "nuisance": nuisance}
        if not (self.root / "lists").is_dir():
            raise DataError(f"{self.root}: no lists/ folder; expected the OOD-CV pose folder")

    def _build(self, skips: Skips) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        for category in self.categories:
            for img, obj_id in list_entries(self.root, category, self.nuisance):
                index_record(entries, skips, category=category, name=img,
                             image=self.root / "images" / category / f"{img}.JPEG",
                             mat=self.root / "annotations" / category / f"{img}.mat",
                             objects=[obj_id], cad_limit=None, tags=self.tags)
        return entries
