"""Procedural appearance: part materials, backgrounds, occluder textures and weather.

Materials are solid textures evaluated at 3D surface points (no UV atlas needed), one per named part,
chosen by the category (``PART_KINDS``: glass windows, rubber tyres, white headlights, red tail lights,
...) so that instances of a category look alike where real ones do; only paint, fabric and wood vary
per instance, and the large panels' family (held out for OOD-CV's texture nuisance). Backgrounds and
occluder textures are 2D image families; occluder textures (foliage, bark, stone, fur) are used by no
object part and no background, as Occluded PASCAL3D+'s occluders differ from the PASCAL3D+ objects.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

PANEL_FAMILIES_IID = ("paint", "metallic", "two_tone", "worn")
PANEL_FAMILY_OOD = "marble"
BACKGROUNDS_IID = ("gradient", "noise", "tiles", "blobs")
BACKGROUND_OOD = "bricks"
OCCLUDER_TEXTURES = ("foliage", "bark", "stone", "fur")
WEATHER = ("fog", "rain", "snow", "lowlight")

Material = Callable[[np.ndarray], np.ndarray]  # (N, 3) surface points -> (N, 3) RGB in [0, 1]


def _colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.3, 0.9),
            value: tuple[float, float] = (0.35, 0.95), hue: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A random RGB colour from hue, saturation and value ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*saturation), rng.uniform(*value)))


def _direction(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _solid(colour) -> Material:
    colour = np.asarray(colour, dtype=np.float64)
    return lambda p: np.broadcast_to(colour, p.shape).copy()


def _grain(c: np.ndarray, rng: np.random.Generator, amount: float, freq: tuple[float, float]) -> Material:
    """A colour with a fine sinusoidal grain: paint orange-peel, fabric weave, wood grain."""
    wave = _direction(rng) * rng.uniform(*freq)
    return lambda p: np.clip(c * (1 + amount * np.sin(p @ wave))[:, None], 0, 1)


def panel(family: str, rng: np.random.Generator, colour: np.ndarray) -> Material:
    """The large painted panels of an instance (car body, fuselage, hull): one family per instance."""
    if family == "paint":
        return _grain(colour, rng, 0.05, (20, 40))
    if family == "metallic":
        flakes = [(_direction(rng) * rng.uniform(60, 120)) for _ in range(3)]
        return lambda p: np.clip(colour * (0.9 + 0.1 * sum(np.sin(p @ w) for w in flakes) / 3)[:, None] + 0.06, 0, 1)
    if family == "two_tone":  # a lower and an upper colour, split at a height
        second, split = _colour(rng, (0.0, 0.3), (0.6, 0.95)), rng.uniform(-0.05, 0.05)
        return lambda p: np.where((p[:, 2] > split)[:, None], second, colour)
    if family == "worn":  # paint with dirt and scratches
        waves = [(_direction(rng) * rng.uniform(8, 20), rng.uniform(0, 2 * np.pi)) for _ in range(3)]
        return lambda p: np.clip(colour * (0.8 + 0.2 * np.tanh(sum(np.sin(p @ w + ph) for w, ph in waves)))[:, None],
                                 0, 1)
    if family == "marble":
        d, freq, turb = _direction(rng), rng.uniform(8, 16), [(_direction(rng) * rng.uniform(10, 25)) for _ in range(3)]

        def marble(p):
            phase = p @ d * freq + 2.0 * sum(np.sin(p @ w) for w in turb)
            t = (0.5 + 0.5 * np.sin(phase))[:, None] ** 3
            return np.clip(colour * (1 - t) + np.ones(3) * t, 0, 1)

        return marble
    raise ValueError(f"unknown panel family {family!r}")


# Materials per part kind; ``panel`` and the furnishing kinds vary per instance, the rest per category.
PAINT_PALETTES: dict[str, dict] = {  # hue, saturation and value ranges of each category's paint
    "aeroplane": dict(saturation=(0.0, 0.15), value=(0.7, 0.95)),
    "bus": dict(saturation=(0.5, 0.9), value=(0.6, 0.95)),
    "boat": dict(saturation=(0.0, 0.5), value=(0.6, 0.95)),
    "train": dict(saturation=(0.3, 0.8), value=(0.4, 0.9)),
}
PART_KINDS: dict[str, dict[str, str]] = {
    "aeroplane": {"fuselage": "panel", "wings": "panel", "tail": "accent", "cockpit": "glass", "engines": "metal"},
    "bicycle": {"tyres": "rubber", "rims": "chrome", "frame": "panel", "saddle": "rubber", "handlebar": "rubber",
                "chainring": "chrome"},
    "boat": {"hull": "panel", "deck": "wood", "mast": "chrome", "sail": "canvas", "cabin": "canvas", "windows": "glass"},
    "bottle": {"glass": "bottle_glass", "cap": "accent", "label": "label"},
    "bus": {"body": "panel", "roof": "metal", "windscreen": "glass", "windows": "glass", "side_windows": "glass",
            "doors": "dark_glass", "headlights": "light_front", "tail_lights": "light_back", "plates": "plate",
            "tyres": "rubber", "rims": "chrome"},
    "car": {"body": "panel", "roof": "panel", "windows": "glass", "tyres": "rubber", "rims": "chrome",
            "headlights": "light_front", "tail_lights": "light_back", "grille": "grille", "plates": "plate"},
    "chair": {"seat": "furniture", "back": "furniture", "legs": "furniture", "arms": "furniture", "cushions": "fabric"},
    "diningtable": {"top": "furniture", "legs": "furniture"},
    "motorbike": {"tyres": "rubber", "rims": "chrome", "tank": "panel", "fairing": "panel", "engine": "metal",
                  "saddle": "rubber", "fork": "chrome", "handlebar": "chrome", "headlights": "light_front",
                  "tail_lights": "light_back", "exhaust": "chrome"},
    "sofa": {"base": "fabric", "back": "fabric", "arms": "fabric", "cushions": "cushion", "legs": "wood"},
    "train": {"body": "panel", "roof": "metal", "windscreen": "glass", "side_windows": "glass",
              "headlights": "light_front", "tail_lights": "light_back", "pantograph": "metal", "wheels": "metal"},
    "tvmonitor": {"bezel": "plastic", "screen": "screen", "stand": "plastic"},
}
EMISSIVE = ("light_front", "light_back")
LARGE_PANELS = ("panel", "fabric", "furniture")  # what the OOD texture nuisance repaints


@dataclass
class Appearance:
    """One instance's materials, one per part, and which parts glow (lights are not shaded)."""

    materials: list[Material]
    emissive: np.ndarray  # (P,) bool


def appearance(category: str, part_names: tuple[str, ...], rng: np.random.Generator, ood_texture: bool = False
               ) -> Appearance:
    """Category-consistent part materials with per-instance paint, fabric and wood."""
    paint = _colour(rng, **PAINT_PALETTES.get(category, {}))
    family = PANEL_FAMILY_OOD if ood_texture else str(rng.choice(PANEL_FAMILIES_IID))
    fabric = _colour(rng, (0.1, 0.6), (0.25, 0.8))
    wood = _colour(rng, (0.4, 0.7), (0.3, 0.7), hue=(0.05, 0.11))
    furniture = wood if rng.random() < 0.6 else _colour(rng, (0.0, 0.2), (0.1, 0.9))
    glass_tint = _colour(rng, (0.1, 0.4), (0.15, 0.3), hue=(0.5, 0.65))
    builders: dict[str, Callable[[], Material]] = {
        "panel": lambda: panel(family, rng, paint),
        "accent": lambda: _solid(_colour(rng, (0.5, 0.9), (0.3, 0.8))),
        "glass": lambda: (lambda p: np.clip(glass_tint + 0.35 * np.clip(p[:, 2:3] * 2 + 0.2, 0, 1), 0, 1)),
        "dark_glass": lambda: _solid(glass_tint * 0.6),
        "rubber": lambda: _grain(np.array([0.07, 0.07, 0.08]), rng, 0.15, (40, 80)),
        "chrome": lambda: (lambda p: np.clip(0.6 + 0.3 * np.sin(p[:, 2:3] * 60).repeat(3, 1), 0, 1)),
        "metal": lambda: _solid([0.42, 0.43, 0.45]),
        "light_front": lambda: _solid([1.0, 0.97, 0.85]),
        "light_back": lambda: _solid([0.85, 0.08, 0.06]),
        "grille": lambda: (lambda p: np.where((np.sin(p[:, 2] * 400) > 0)[:, None], 0.05, 0.3).repeat(3, 1)),
        "plate": lambda: (lambda p: np.where((np.abs(np.sin(p[:, 0] * 300)) > 0.7)[:, None], 0.15, 0.95).repeat(3, 1)),
        "fabric": lambda: (panel(family, rng, fabric) if ood_texture else _grain(fabric, rng, 0.08, (60, 120))),
        "cushion": lambda: _grain(np.clip(fabric * 1.15, 0, 1), rng, 0.08, (60, 120)),
        "wood": lambda: _grain(wood, rng, 0.12, (30, 60)),
        "furniture": lambda: (panel(family, rng, furniture) if ood_texture else _grain(furniture, rng, 0.12, (30, 60))),
        "canvas": lambda: _solid(_colour(rng, (0.0, 0.1), (0.85, 0.97))),
        "bottle_glass": lambda: _solid(_colour(rng, (0.4, 0.8), (0.25, 0.6), hue=(0.08, 0.4))),
        "label": lambda: (lambda p, c=_colour(rng, (0.5, 1.0), (0.6, 1.0)): np.where(
            (np.sin(np.arctan2(p[:, 1], p[:, 0]) * 3) > 0.6)[:, None], 0.95, c)),
        "plastic": lambda: _solid(_colour(rng, (0.0, 0.1), (0.05, 0.8))),
        "screen": lambda: (lambda p: np.clip(np.array([0.05, 0.07, 0.1]) + 0.15 * np.clip(p[:, 2:3] + 0.2, 0, 1), 0, 1)),
    }
    kinds = [PART_KINDS[category][name] for name in part_names]
    return Appearance([builders[k]() for k in kinds], np.array([k in EMISSIVE for k in kinds]))


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
    elif family == "blobs":  # out-of-focus clutter: soft discs
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


def occluder_texture(family: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) natural texture for an occluder patch; no object part or background uses these families,
    as Occluded PASCAL3D+'s occluders (COCO objects and textures) differ from the PASCAL3D+ objects."""
    h, w = shape
    if family == "foliage":  # overlapping leaves in greens, darker gaps between them
        yy, xx = np.mgrid[:h, :w]
        img = np.tile(_colour(rng, (0.5, 0.8), (0.1, 0.25), hue=(0.22, 0.35)), (h, w, 1))
        for _ in range(int(h * w / 60) + 4):
            cy, cx, r = rng.random() * h, rng.random() * w, rng.uniform(3, 8)
            a = rng.uniform(0, np.pi)
            u = ((xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)) / r
            v = (-(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)) / (r * 0.45)
            leaf = (u ** 2 + v ** 2) < 1
            img[leaf] = _colour(rng, (0.45, 0.9), (0.3, 0.75), hue=(0.18, 0.38)) * (0.85 + 0.15 * u[leaf, None])
        return np.clip(img, 0, 1)
    if family == "bark":  # vertical ridges
        stretch = np.repeat(_smooth_noise(rng, (max(2, -(-h // 12)), w), max(w // 3, 4))[..., 0], 12, axis=0)[:h]
        ridges = 0.5 + 0.5 * np.sin(np.arange(w)[None, :] * rng.uniform(0.6, 1.2) + 6 * stretch)
        base = _colour(rng, (0.3, 0.6), (0.2, 0.45), hue=(0.04, 0.1))
        return np.clip(base * (0.55 + 0.6 * ridges)[..., None], 0, 1)
    if family == "stone":  # pebbles: thresholded cells with dark cracks
        n = _smooth_noise(rng, shape, max(4, max(h, w) // 8))[..., 0]
        cracks = np.abs(n - 0.5) < 0.03
        base = _colour(rng, (0.0, 0.2), (0.45, 0.75), hue=(0.05, 0.15))
        img = base * (0.7 + 0.5 * _smooth_noise(rng, shape, max(4, max(h, w) // 4)))
        return np.clip(np.where(cracks[..., None], base * 0.35, img), 0, 1)
    if family == "fur":  # fine strokes along one direction
        base = _colour(rng, (0.2, 0.6), (0.3, 0.8), hue=(0.03, 0.12))
        strokes = ndimage.gaussian_filter(rng.random((h, w)), (3.0, 0.6))
        strokes = (strokes - strokes.min()) / (np.ptp(strokes) + 1e-9)
        return np.clip(base * (0.6 + 0.7 * strokes)[..., None], 0, 1)
    raise ValueError(f"unknown occluder texture {family!r}")


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
