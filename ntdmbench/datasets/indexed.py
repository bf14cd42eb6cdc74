"""Adapters that index a folder once: sorted ids, counted skips, and an index digest of the ground truth.

A sample that cannot be used (missing key, distance 0, unreadable file, image without annotation) never
aborts the index and never enters it with a guessed pose: it is recorded in ``skips`` with the file it
concerns, and ``ntdmbench validate`` / ``describe()`` report the counts. A skip that is a defect of the
data (not one of the ``EXPECTED_SKIPS`` the real releases hold by design) and whose sample id is known is
also ``unusable()``: a run counts it as a failed sample instead of scoring a silently smaller n.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ntdmbench.datasets.base import Dataset
from ntdmbench.datasets.records import DataError, Sample


EXPECTED_SKIPS = frozenset({"distance 0", "empty viewpoint", "object of another class"})
"""Skips the real releases contain by design: not defects, never failures."""


class SampleSkip(DataError):
    """One unusable sample; ``reason`` is the short label its count is grouped under."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Skips:
    """What an index left out, one ``(reason, message)`` per sample, the message naming the file, and
    ``{id: (category, message)}`` of the defective ones whose id is known."""

    items: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    unusable: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    def add(self, exc: DataError, sample_id: str | None = None) -> None:
        reason = getattr(exc, "reason", "unreadable")
        self.items.append((reason, str(exc)))
        if sample_id is not None and reason not in EXPECTED_SKIPS:
            self.unusable[sample_id] = (sample_id.split("/", 1)[0], str(exc))

    def counts(self) -> dict[str, int]:
        return dict(Counter(reason for reason, _ in self.items))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> str:
        parts = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts().items()))
        return f"{len(self)} skipped ({parts})" if self.items else "0 skipped"


@dataclass(frozen=True)
class Entry:
    """An indexed sample without its masks, plus where ``load`` finds them."""

    sample: Sample
    mask_source: Any = None


class IndexedDataset(Dataset):
    """Builds ``{id: Entry}`` on first use; ``load`` copies the entry and adds masks."""

    format_version: str = "1"

    def __init__(self, name: str, root: Path):
        self.name = name
        self.root = Path(root)
        self.skips = Skips()

    @property
    def version(self) -> str:  # type: ignore[override]
        return f"{type(self).__name__}/{self.format_version}"

    @abc.abstractmethod
    def _build(self, skips: Skips) -> dict[str, Entry]:
        """Index the folder, recording unusable samples in ``skips``."""

    def _masks(self, entry: Entry) -> dict[str, Any]:
        """Mask fields for ``Sample`` (read on ``load``); adapters without masks return nothing."""
        return {}

    @functools.cached_property
    def _index(self) -> dict[str, Entry]:
        skips = Skips()
        entries = self._build(skips)
        self.skips = skips
        return dict(sorted(entries.items()))

    def ids(self) -> list[str]:
        return list(self._index)

    def unusable(self) -> dict[str, tuple[str, str]]:
        index = self._index  # building the index fills the skips
        return {i: v for i, v in self.skips.unusable.items() if i not in index}

    def load(self, sample_id: str) -> Sample:
        entry = self._index.get(sample_id)
        if entry is None:
            if sample_id in self.skips.unusable:
                raise DataError(self.skips.unusable[sample_id][1])
            raise DataError(f"{self.name}: no sample with id {sample_id!r} under {self.root}")
        return dataclasses.replace(entry.sample, tags=dict(entry.sample.tags), **self._masks(entry))

    def index_payload(self) -> str:
        """Ids plus the ground truth each carries, so an edited annotation changes the hash; unusable ids
        marked as such (not with their message: it names the root's path, and the hash names content)."""
        usable = [f"{i}\t{_digest(e.sample)}" for i, e in self._index.items()]
        bad = [f"{i}\tunusable" for i in sorted(self.unusable())]
        return "\n".join(usable + bad)

    def describe(self) -> dict:
        out = super().describe()
        out.update(root=str(self.root), skipped=len(self.skips), skip_counts=self.skips.counts())
        return out


def _digest(s: Sample) -> str:
    pose = s.pose
    angles = "none" if pose is None else ",".join(
        f"{v:.9g}" for v in (*pose.angles(), pose.distance, *(pose.principal or ()))
    )
    bbox = "none" if s.bbox is None else ",".join(f"{v:.6g}" for v in s.bbox)
    out = f"{s.category};{angles};{bbox};{s.cad_index}"
    if s.keypoints is not None:  # only then, so the digests of data without keypoints stay as they were
        kp = s.keypoints
        out += ";" + ",".join(f"{x:.6g}:{y:.6g}:{int(v)}" for (x, y), v in zip(kp.xy, kp.visible))
    return out
