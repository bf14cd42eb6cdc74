"""Dataset catalog: names such as ``pascal3d/val`` mapped to factories ``factory(root) -> Dataset``.

Adapters register their split names here (lazily, as ``"module:attr"``), so ``ntdmbench ls`` and the
CLI find them without importing every adapter. A factory receives the root the user gave (``--root``)
or ``None``, in which case it reads its environment variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ntdmbench.datasets.base import Dataset
from ntdmbench.registry import Registry

DatasetFactory = Callable[[Path | None], Dataset]

DATASETS: Registry[DatasetFactory] = Registry("dataset", entry_point_group="ntdmbench.datasets")


def load_dataset(name: str, root: str | Path | None = None) -> Dataset:
    factory = DATASETS.get(name)
    return factory(Path(root) if root is not None else None)
