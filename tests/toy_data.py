"""A small on-disk dataset for harness tests: real PNG files, poses, masks and categories."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ntdmbench.datasets.base import InMemoryDataset
from ntdmbench.datasets.records import CATEGORIES, Pose, Sample
from ntdmbench.models.reference import OraclePredictor


def make_samples(root: Path, n: int = 24, seed: int = 0, size: tuple[int, int] = (24, 32)) -> list[Sample]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    samples = []
    for i in range(n):
        path = root / f"img_{i:04d}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        cy, cx, ry, rx = rng.uniform(6, h - 6), rng.uniform(8, w - 8), rng.uniform(3, 8), rng.uniform(4, 10)
        amodal = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        occluder = xx < cx
        category = CATEGORIES[i % 4]
        samples.append(Sample(
            id=f"{category}/img_{i:04d}", category=category,
            pose=Pose(rng.uniform(0, 2 * np.pi), rng.uniform(-0.2, 0.7), rng.uniform(-0.3, 0.3), 5.0, (w / 2, h / 2)),
            image_path=path, amodal_mask=amodal, inmodal_mask=amodal & ~occluder, occluder_mask=occluder,
            tags={"dataset": "toy", "split": "val", "level": "L0"},
        ))
    return samples


def toy_dataset(root: Path, n: int = 24, seed: int = 0) -> InMemoryDataset:
    return InMemoryDataset(make_samples(root, n, seed), name="toy/val")


@dataclass
class SlowOracle(OraclePredictor):
    """The oracle with a pause per sample, so a test can kill a run part-way."""

    name = "slow-oracle"
    delay: float = 0.05

    def predict(self, batch):
        time.sleep(self.delay * len(batch))
        return super().predict(batch)


@dataclass
class FlakyOracle(OraclePredictor):
    """The oracle, except that it raises on every sample whose index is a multiple of ``every``."""

    name = "flaky-oracle"
    every: int = 5

    def predict(self, batch):
        for s in batch:
            if int(s.id.rsplit("_", 1)[1]) % self.every == 0:
                raise RuntimeError(f"cannot handle {s.id}")
        return super().predict(batch)


def register(root: Path, n: int = 24) -> None:
    """Put the toy dataset and test models in the registries (idempotent), as a plugin would."""
    from ntdmbench.datasets.catalog import DATASETS
    from ntdmbench.models.registry import MODELS

    if "toy/val" not in DATASETS:
        DATASETS.register("toy/val", lambda _root: toy_dataset(root, n))
    for model in (SlowOracle, FlakyOracle):
        if model.name not in MODELS:
            MODELS.register(model.name, model)
