"""Dataset catalog: names such as ``pascal3d/val`` mapped to factories ``factory(root) -> Dataset``.

A factory receives the root the user gave (``--root``) or ``None``, in which case it reads its
environment variable. Entries are small ``CatalogEntry`` objects; the adapter module (scipy, PIL) is
imported only when a dataset is opened, so listing names stays cheap.

Names and roots (the NeMo-prepared layout is what the models consume):

======================================  ====================================  =================================
name                                    root (``--root`` or env var)          layout
======================================  ====================================  =================================
``pascal3d/train``, ``pascal3d/val``    ``NTDMBENCH_PASCAL3D``                NeMo layout (``PASCAL3D_NeMo``)
``occluded-pascal3d/val/L1`` .. ``L3``  ``NTDMBENCH_OCCLUDED_PASCAL3D``,      NeMo layout, ``{cate}FGLk_BGLk``
                                        else ``NTDMBENCH_PASCAL3D``
``oodcv/train``, ``oodcv/test/{n}``     ``NTDMBENCH_OODCV``                   NeMo layout (``OOD_CV_NeMo``),
                                                                              n in context, pose, shape,
                                                                              texture, weather, iid
``pascal3d-raw/{train,val}[/pascal]``   ``NTDMBENCH_PASCAL3D_RAW``            ``PASCAL3D+_release1.1``
``occluded-pascal3d-raw/val/L1``..L3    ``NTDMBENCH_OCCLUDED_PASCAL3D_RAW``   ``OccludedPASCAL3D``; pose GT from
                                                                              ``NTDMBENCH_PASCAL3D_RAW``, else a
                                                                              sibling ``PASCAL3D+_release1.1``
``oodcv-raw/test/{n}``                  ``NTDMBENCH_OODCV_RAW``               ``ood_cv`` (``pose.zip``)
======================================  ====================================  =================================

Clean and occluded samples of one object share an id, so drops pair by id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ntdmbench.datasets.base import Dataset
from ntdmbench.datasets.records import DataError
from ntdmbench.errors import MissingFileError
from ntdmbench.registry import Registry

DatasetFactory = Callable[[Path | None], Dataset]

DATASETS: Registry[DatasetFactory] = Registry("dataset", entry_point_group="ntdmbench.datasets")

ENV_VARS: dict[str, tuple[str, ...]] = {
    "pascal3d": ("NTDMBENCH_PASCAL3D",),
    "occluded-pascal3d": ("NTDMBENCH_OCCLUDED_PASCAL3D", "NTDMBENCH_PASCAL3D"),
    "oodcv": ("NTDMBENCH_OODCV",),
    "pascal3d-raw": ("NTDMBENCH_PASCAL3D_RAW",),
    "occluded-pascal3d-raw": ("NTDMBENCH_OCCLUDED_PASCAL3D_RAW",),
    "oodcv-raw": ("NTDMBENCH_OODCV_RAW",),
}
"""Environment variables per family, first set wins."""

RAW_RELEASE_DIR = "PASCAL3D+_release1.1"


def resolve_root(name: str, family: str, root: Path | None) -> Path:
    """The root from ``--root`` or the family's environment variable; one-line error when neither is usable."""
    env = ENV_VARS[family]
    if root is None:
        root = next((Path(os.environ[v]) for v in env if os.environ.get(v)), None)
        if root is None:
            raise DataError(f"dataset {name}: no root; pass --root DIR or set {' or '.join(env)}")
    if not Path(root).is_dir():
        raise MissingFileError(f"dataset {name}: root {root} is not a directory")
    return Path(root)


def clean_release_root(occluded_root: Path) -> Path:
    """Where the clean release lies for occluded raw data: its env var, else next to ``OccludedPASCAL3D``."""
    env = ENV_VARS["pascal3d-raw"][0]
    if os.environ.get(env):
        return Path(os.environ[env])
    sibling = occluded_root.parent / RAW_RELEASE_DIR
    if sibling.is_dir():
        return sibling
    raise DataError(f"{occluded_root}: occluded pose GT needs the clean release; set {env} "
                    f"or put {RAW_RELEASE_DIR} next to it")


@dataclass(frozen=True)
class CatalogEntry:
    """One catalog name: which adapter opens it, with which split / level / nuisance."""

    name: str
    family: str
    split: str
    level: int = 0
    nuisance: str | None = None
    options: dict = field(default_factory=dict)

    def __call__(self, root: Path | None = None) -> Dataset:
        root = resolve_root(self.name, self.family, root)
        if self.family in ("pascal3d", "occluded-pascal3d", "oodcv"):
            from ntdmbench.datasets.nemo_format import NemoDataset
            from ntdmbench.datasets.oodcv import OODCV_CATEGORIES
            from ntdmbench.datasets.records import CATEGORIES

            categories = OODCV_CATEGORIES if self.family == "oodcv" else CATEGORIES
            folder = "val" if self.split == "test" else self.split
            dataset = NemoDataset(root, folder, level=self.level, nuisance=self.nuisance, categories=categories,
                                  dataset=self.family, name=self.name)
            dataset.tags["split"] = self.split
            return dataset
        if self.family == "pascal3d-raw":
            from ntdmbench.datasets.pascal3d import Pascal3DRaw

            return Pascal3DRaw(root, self.split, name=self.name, **self.options)
        if self.family == "occluded-pascal3d-raw":
            from ntdmbench.datasets.occluded import OccludedRaw

            return OccludedRaw(root, self.level, clean_release_root(root), name=self.name)
        from ntdmbench.datasets.oodcv import OodcvRaw

        return OodcvRaw(root, self.nuisance, name=self.name)


def _entries() -> list[CatalogEntry]:
    nuisances = ("context", "pose", "shape", "texture", "weather", "iid")
    out = [CatalogEntry(f"pascal3d/{s}", "pascal3d", s) for s in ("train", "val")]
    out += [CatalogEntry(f"occluded-pascal3d/val/L{k}", "occluded-pascal3d", "val", level=k) for k in (1, 2, 3)]
    out += [CatalogEntry("oodcv/train", "oodcv", "train")]
    out += [CatalogEntry(f"oodcv/test/{n}", "oodcv", "test", nuisance=n) for n in nuisances]
    out += [CatalogEntry(f"pascal3d-raw/{s}", "pascal3d-raw", s) for s in ("train", "val")]
    out += [CatalogEntry(f"pascal3d-raw/{s}/pascal", "pascal3d-raw", s, options={"subset": "pascal"})
            for s in ("train", "val")]
    out += [CatalogEntry(f"occluded-pascal3d-raw/val/L{k}", "occluded-pascal3d-raw", "val", level=k)
            for k in (1, 2, 3)]
    out += [CatalogEntry(f"oodcv-raw/test/{n}", "oodcv-raw", "test", nuisance=n) for n in nuisances]
    return out


for _entry in _entries():
    DATASETS.register(_entry.name, _entry)


def load_dataset(name: str, root: str | Path | None = None) -> Dataset:
    factory = DATASETS.get(name)
    return factory(Path(root) if root is not None else None)
