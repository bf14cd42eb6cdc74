"""A small trainable model for suite tests: it learns the mean pose of each category.

Importable by name (``suite_models:MeanPose``) so a suite file can register it with ``register:`` in
a torchrun subprocess too (with ``tests/`` on ``PYTHONPATH``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ntdmbench.datasets.records import Prediction, Sample
from ntdmbench.models.predictor import BasePredictor, Capability, InputSpec


@dataclass
class MeanPose(BasePredictor):
    """Predicts the training mean (a, e, theta) of the sample's category; trains per category."""

    name = "mean-pose"
    capabilities = frozenset({Capability.POSE})
    input_spec = InputSpec(needs_category=True)
    shift: float = 0.0  # added to the azimuth at prediction (an inference switch for tests)
    means: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def config(self) -> dict:
        return {"shift": self.shift}

    def fit(self, dataset, *, categories, resume, device, seed, progress) -> None:
        """Reports two "epochs" on a tqdm bar, as the real models do (the per-epoch loss CSV reads them)."""
        from tqdm.auto import tqdm

        angles = {c: np.array([dataset.load(i).pose.angles() for i in dataset.ids() if i.startswith(f"{c}/")])
                  for c in categories}
        with tqdm(total=2, desc=f"mean-pose {'+'.join(categories)}", disable=not progress) as bar:
            for epoch in range(2):
                for category in categories:
                    self.means[category] = angles[category].mean(axis=0).tolist()
                spread = np.mean([np.abs(a - a.mean(axis=0)).mean() for a in angles.values()])
                bar.set_postfix(epoch=f"{epoch + 1}/2", loss=f"{spread / (epoch + 1):.4f}")
                bar.update()

    def state_dict(self) -> dict:
        return {"means": dict(self.means)}

    def load_state_dict(self, state: dict) -> None:
        self.means = dict(state["means"])

    def merge(self, paths: Sequence[Path]) -> None:
        """Join per-category checkpoints (what ``per_category: true`` suites need)."""
        for path in paths:
            self.means.update(torch.load(path, map_location="cpu", weights_only=False)["state"]["means"])

    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        out = []
        for s in batch:
            a, e, t = self.means[s.category]
            out.append(Prediction(id=s.id, azimuth=a + self.shift, elevation=e, theta=t, distance=5.0))
        return out


@dataclass
class Sleeper(MeanPose):
    """A mean pose that sleeps in ``predict`` and, like a C++ extension, turns Ctrl-C into a RuntimeError;
    it touches ``marker`` first so a test knows when to interrupt it."""

    name = "sleeper"
    marker: str = ""

    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        import time

        Path(self.marker).touch()
        try:
            time.sleep(30)
        except KeyboardInterrupt:
            raise RuntimeError("interrupted inside an extension") from None
        return super().predict(batch)
