"""Procedural appearance: object materials, backgrounds, occluder fills and weather.

Each is a *family* of random instances, so a split can hold a family out (OOD-CV's texture and context
nuisances): materials are solid textures evaluated at 3D surface points (no UV atlas needed), backgrounds
and occluder fills are 2D images. Occluders use fills that no object or background uses, as the
Occluded PASCAL3D+ occluders (COCO objects) differ from the PASCAL3D+ objects.
"""

from __future__ import annotations

import colorsys
from typing import Callable

import numpy as np
from scipy import ndimage

MATERIALS_IID = ("paint", "stripes", "checker", "camo")
MATERIAL_OOD = "marble"
BACKGROUNDS_IID = ("gradient", "noise", "tiles", "blobs")
BACKGROUND_OOD = "bricks"
WEATHER = ("fog", "rain", "snow", "lowlight")

Material = Callable[[np.ndarray], np.ndarray]  # (N, 3) surface points -> (N, 3) RGB in [0, 1]


def _colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.3, 0.9)) -> np.ndarray:
    """A random RGB colour with a random hue and the given saturation range."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(0.35, 0.95)))


def _direction(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def material(family: str, rng: np.random.Generator) -> Material:
    """A random instance of a material family."""
    c1, c2 = _colour(rng), _colour(rng)
    if family == "paint":
        grain_wave = _direction(rng) * rng.uniform(20, 40)
        return lambda p: np.clip(c1 + 0.06 * np.sin(p @ grain_wave)[:, None], 0, 1)
    if family == "stripes":
        d, freq = _direction(rng), rng.uniform(15, 35)
        return lambda p: np.where((np.sin(p @ d * freq) > 0)[:, None], c1, c2)
    if family == "checker":
        size = rng.uniform(0.06, 0.14)
        return lambda p: np.where((np.floor(p / size).sum(axis=1) % 2 == 0)[:, None], c1, c2)
    if family == "camo":
        waves = [(_direction(rng) * rng.uniform(6, 14), rng.uniform(0, 2 * np.pi)) for _ in range(4)]
        c3 = _colour(rng)

        def camo(p):
            s = sum(np.sin(p @ w + ph) for w, ph in waves)
            return np.where((s > 0.6)[:, None], c1, np.where((s < -0.6)[:, None], c2, c3))

        return camo
    if family == "marble":
        d, freq, turb = _direction(rng), rng.uniform(8, 16), [(_direction(rng) * rng.uniform(10, 25)) for _ in range(3)]

        def marble(p):
            phase = p @ d * freq + 2.0 * sum(np.sin(p @ w) for w in turb)
            t = (0.5 + 0.5 * np.sin(phase))[:, None] ** 3
            return np.clip(c1 * (1 - t) + np.ones(3) * t, 0, 1)

        return marble
    raise ValueError(f"unknown material family {family!r}")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, channels: int = 1) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid, cubic-upsampled to ``shape``."""
    h, w = shape
    grid = rng.random((max(2, cells * h // max(h, w)) + 1, max(2, cells * w // max(h, w)) + 1, channels))
    zoom = (h / (grid.shape[0] - 1), w / (grid.shape[1] - 1), 1)
    out = ndimage.zoom(grid, zoom, order=3, mode="nearest")[:h, :w]
    return np.clip(out, 0, 1)


def background(family: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) float background image of a family."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    c1, c2 = _colour(rng, (0.1, 0.6)), _colour(rng, (0.1, 0.6))
    if family == "gradient":  # sky above a textured ground
        horizon = rng.uniform(0.3, 0.7) * h / max(h, w)
        sky = c1 + (yy[..., None] / max(horizon, 1e-3)) * 0.2
        ground = c2 * (0.7 + 0.3 * _smooth_noise(rng, shape, 24))
        img = np.where((yy < horizon)[..., None], sky, ground)
    elif family == "noise":
        n = _smooth_noise(rng, shape, int(rng.integers(4, 12)), 3)
        img = c1 * (1 - n) + c2 * n
    elif family == "tiles":
        size = rng.uniform(0.05, 0.15)
        checker = ((np.floor(xx / size) + np.floor(yy / size)) % 2)[..., None]
        img = (c1 * checker + c2 * (1 - checker)) * (0.85 + 0.15 * _smooth_noise(rng, shape, 8))
    elif family == "blobs":  # foliage-like clutter of soft discs
        img = np.tile(c1, (h, w, 1)) * 0.8
        for _ in range(int(rng.integers(15, 40))):
            cy, cx, r = rng.random() * h, rng.random() * w, rng.uniform(0.03, 0.12) * max(h, w)
            disc = np.clip(1.5 - np.hypot(yy * max(h, w) - cy, xx * max(h, w) - cx) / r, 0, 1)[..., None]
            img = img * (1 - disc) + _colour(rng, (0.2, 0.7)) * disc
    elif family == "bricks":
        bh = rng.uniform(0.04, 0.08)
        row = np.floor(yy / bh)
        shifted = xx + (row % 2) * bh
        mortar = ((yy / bh) % 1 < 0.12) | ((shifted / (2 * bh)) % 1 < 0.06)
        brick = c1 * (0.8 + 0.2 * _smooth_noise(rng, shape, 30))
        img = np.where(mortar[..., None], np.full(3, 0.75), brick)
    else:
        raise ValueError(f"unknown background family {family!r}")
    return np.clip(img, 0, 1)


def occluder_fill(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Dots or hatching in saturated colours: a family used by no object and no background."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    c1, c2 = _colour(rng, (0.7, 1.0)), _colour(rng, (0.7, 1.0))
    period = rng.uniform(4, 9)
    if rng.random() < 0.5:
        pattern = (np.hypot((yy % period) - period / 2, (xx % period) - period / 2) < period / 3)
    else:
        pattern = ((xx + yy) % period) < period / 2
    return np.where(pattern[..., None], c1, c2)


def apply_weather(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Fog, rain, snow or low light on an (H, W, 3) float image in [0, 1]."""
    h, w = image.shape[:2]
    if kind == "fog":
        density = rng.uniform(0.45, 0.7) * (0.7 + 0.3 * _smooth_noise(rng, (h, w), 4))
        return image * (1 - density) + 0.8 * density
    if kind == "rain":
        out = image * 0.8
        streaks = np.zeros((h, w))
        idx = rng.random((h, w)) < 0.02
        streaks[idx] = 1.0
        length = max(3, h // 10)
        streaks = ndimage.convolve(streaks, np.eye(length)[:, ::-1] / 2, mode="constant")
        return np.clip(out + 0.5 * np.clip(streaks, 0, 1)[..., None], 0, 1)
    if kind == "snow":
        flakes = ndimage.gaussian_filter((rng.random((h, w)) < 0.03).astype(float), 0.7) * 4
        return np.clip(image * 0.85 + 0.15 + np.clip(flakes, 0, 1)[..., None], 0, 1)
    if kind == "lowlight":
        dark = image ** rng.uniform(1.8, 2.6) * rng.uniform(0.25, 0.4)
        return np.clip(dark + rng.normal(0, 0.02, image.shape), 0, 1)
    raise ValueError(f"unknown weather {kind!r}")
