"""The training contract a model's ``fit`` is given: where to keep a resumable state, and the ids per category.

``Predictor.fit(dataset, *, categories, resume, device, seed, progress)`` (``models/predictor.py``):
``categories`` is the list to train (per-category models train one each; joint models train on all
samples of these categories); ``resume`` is where the model keeps a resumable state at its own
checkpoints (``resume.save(state)`` / ``resume.load()``), so a killed ``ntdmbench train`` continues from
there when rerun with the same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ntdmbench.datasets.base import Dataset


@dataclass
class Resume:
    """An atomically written training state next to the final checkpoint (``CKPT.resume``)."""

    path: Path

    @classmethod
    def beside(cls, checkpoint: str | Path) -> "Resume":
        checkpoint = Path(checkpoint)
        return cls(checkpoint.with_name(checkpoint.name + ".resume"))

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def ids_by_category(dataset: Dataset, categories: Sequence[str]) -> dict[str, list[str]]:
    """Sample ids grouped by category; ids are ``{category}/{name}`` in every adapter."""
    out: dict[str, list[str]] = {c: [] for c in categories}
    for sample_id in dataset.ids():
        category = sample_id.split("/", 1)[0]
        if category in out:
            out[category].append(sample_id)
    return out
