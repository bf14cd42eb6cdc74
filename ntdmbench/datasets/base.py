"""The dataset contract the runner and scorer rely on, and an in-memory dataset for the Python API."""

from __future__ import annotations

import abc
import functools
import hashlib
from typing import Iterator, Sequence

from ntdmbench.datasets.records import Sample


class Dataset(abc.ABC):
    """An indexed, versioned collection of samples.

    ``ids()`` is cheap and stable (sorted); ``load(id)`` returns the ground truth with the image left on
    disk until ``Sample.load_image``. ``version`` and ``index_hash()`` go into every result so numbers
    from a changed split are never compared silently.
    """

    name: str = "dataset"
    version: str = "1"

    @abc.abstractmethod
    def ids(self) -> list[str]:
        """Stable sample ids, sorted."""

    @abc.abstractmethod
    def load(self, sample_id: str) -> Sample:
        """The sample with this id (ground truth and tags; image read on demand)."""

    def unusable(self) -> dict[str, tuple[str, str]]:
        """``{id: (category, why)}`` of samples the folder holds but that cannot be used (an unreadable or
        incomplete annotation, an image without one); runs score them as failures so n never shrinks."""
        return {}

    def index_payload(self) -> str:
        """What identifies the index; adapters may add annotation digests to the ids."""
        return "\n".join(self.ids())

    @functools.cached_property
    def _index_hash(self) -> str:
        return hashlib.sha256(self.index_payload().encode()).hexdigest()[:16]

    def index_hash(self) -> str:
        return self._index_hash

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[Sample]:
        return (self.load(i) for i in self.ids())

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "index_hash": self.index_hash(), "size": len(self)}

    def identity(self) -> dict:
        """What names the data in run and checkpoint keys: its content, never the path it was read from."""
        return {"name": self.name, "version": self.version, "index_hash": self.index_hash()}


class InMemoryDataset(Dataset):
    """Samples already in memory, for the Python API and tests."""

    def __init__(self, samples: Sequence[Sample], name: str = "in-memory", version: str = "1"):
        self.name, self.version = name, version
        self._samples = {s.id: s for s in samples}
        if len(self._samples) != len(samples):
            raise ValueError(f"{name}: duplicate sample ids")

    def ids(self) -> list[str]:
        return sorted(self._samples)

    def load(self, sample_id: str) -> Sample:
        return self._samples[sample_id]
