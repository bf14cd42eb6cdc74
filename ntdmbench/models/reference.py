"""Reference predictors for checking the harness itself: ``oracle`` returns the ground truth and
``random`` guesses, so every metric has a known ceiling and a known chance level."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ntdmbench.datasets.records import CATEGORIES, Prediction, Sample
from ntdmbench.models.predictor import BasePredictor, Capability

ALL_TASKS = frozenset({Capability.POSE, Capability.CLASS, Capability.AMODAL})


@dataclass
class OraclePredictor(BasePredictor):
    """Returns the ground truth: every metric must come out perfect (BOP's GT-as-results check)."""

    name = "oracle"
    capabilities = ALL_TASKS
    paper = "ground truth"

    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        out = []
        for s in batch:
            pose = s.pose
            out.append(Prediction(
                id=s.id,
                category=s.category,
                class_scores={s.category: 1.0},
                azimuth=pose.azimuth if pose else None,
                elevation=pose.elevation if pose else None,
                theta=pose.theta if pose else None,
                distance=pose.distance if pose else None,
                amodal_mask=s.amodal_mask,
                inmodal_mask=s.inmodal_mask,
            ))
        return out


def uniform_angles(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) azimuth, elevation, theta whose rotations are uniform (Haar) on SO(3).

    ``R = Rz(theta) Rx(-(pi/2 - e)) Rz(-a)`` is a z-x-z Euler product with middle angle pi/2 - e, so a
    uniform rotation has uniform a and theta and ``sin(e)`` uniform on [-1, 1].
    """
    azimuth = rng.uniform(0.0, 2 * np.pi, n)
    elevation = np.arcsin(rng.uniform(-1.0, 1.0, n))
    theta = rng.uniform(-np.pi, np.pi, n)
    return np.stack([azimuth, elevation, theta], axis=1)


@dataclass
class RandomPredictor(BasePredictor):
    """Uniform random rotation, class and per-pixel mask, seeded per sample id (resumable, reproducible)."""

    name = "random"
    capabilities = ALL_TASKS
    paper = "chance level"
    seed: int = 0
    categories: tuple[str, ...] = CATEGORIES

    def _rng(self, sample_id: str) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}:{sample_id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def predict(self, batch: Sequence[Sample]) -> list[Prediction]:
        out = []
        for s in batch:
            rng = self._rng(s.id)
            a, e, t = uniform_angles(rng, 1)[0]
            scores = rng.dirichlet(np.ones(len(self.categories)))
            h, w = s.load_image().shape[:2]
            out.append(Prediction(
                id=s.id,
                category=self.categories[int(np.argmax(scores))],
                class_scores=dict(zip(self.categories, scores.round(6).tolist())),
                azimuth=float(a), elevation=float(e), theta=float(t), distance=5.0,
                amodal_mask=rng.random((h, w)) < 0.5,
            ))
        return out
