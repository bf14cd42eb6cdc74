"""The two records every part of the harness exchanges: a ``Sample`` (input + ground truth) and a
``Prediction`` (what a model says about one sample).

Angles are radians everywhere inside the project, whatever unit a file stores. Masks are boolean
``(H, W)`` arrays in the coordinates of the image the sample carries. A prediction travels as one
JSON line; masks inside it are COCO RLE (``pycocotools``) so a shard stays small and line-oriented and
any COCO tool reads them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ntdmbench.errors import NtdmbenchError

CATEGORIES: tuple[str, ...] = (
    "aeroplane", "bicycle", "boat", "bottle", "bus", "car",
    "chair", "diningtable", "motorbike", "sofa", "train", "tvmonitor",
)
"""The 12 PASCAL3D+ categories, in the order every table uses."""

SHORT_NAMES: dict[str, str] = dict(zip(CATEGORIES, (
    "plane", "bike", "boat", "bottle", "bus", "car", "chair", "table", "mbike", "sofa", "train", "tv",
)))


class DataError(NtdmbenchError, ValueError):
    """Bad input data; the message is one line naming the file or value at fault."""


@dataclass(frozen=True)
class Pose:
    """A PASCAL3D+ viewpoint: angles in radians, distance in CAD units, principal point in pixels."""

    azimuth: float
    elevation: float
    theta: float
    distance: float = 5.0
    principal: tuple[float, float] | None = None  # (px, py): x right, y down
    focal: float = 1.0
    viewport: float = 3000.0

    def angles(self) -> tuple[float, float, float]:
        return (self.azimuth, self.elevation, self.theta)


@dataclass
class Keypoints:
    """PASCAL3D+ semantic keypoints of one object, in the pixel coordinates of the sample's image.

    ``names`` follow ``ntdmbench.datasets.keypoints.KEYPOINT_NAMES[category]`` (NeMo's order);
    ``visible`` is the annotation status after occlusion (a keypoint under an occluder is not visible).
    """

    names: tuple[str, ...]
    xy: np.ndarray  # (K, 2) float, x right, y down
    visible: np.ndarray  # (K,) bool


@dataclass
class Sample:
    """One object to evaluate: the image, the ground truth, and the tags tables group by.

    ``tags`` holds ``dataset``, ``split``, ``level`` (``L0``..``L3``) and ``nuisance`` where they apply.
    The image is read from ``image_path`` on demand (``load_image``) so an index of samples is cheap.
    """

    id: str
    category: str
    pose: Pose | None = None
    image_path: Path | None = None
    image: np.ndarray | None = None  # (H, W, 3) uint8, RGB
    amodal_mask: np.ndarray | None = None
    inmodal_mask: np.ndarray | None = None
    occluder_mask: np.ndarray | None = None
    bbox: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1) in image pixels
    cad_index: int | None = None  # 1-based, as PASCAL3D+ stores it
    keypoints: Keypoints | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        """The RGB image as a uint8 array, read once from ``image_path``."""
        if self.image is None:
            if self.image_path is None:
                raise DataError(f"sample {self.id}: no image and no image_path")
            self.image = read_rgb(self.image_path)
        return self.image


def read_rgb(path: Path | str) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8; a missing or corrupt file is a one-line DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None


@dataclass
class Prediction:
    """What a model says about one sample. Fields it cannot predict stay ``None``.

    ``failure`` holds the reason when the model raised on this sample; the scorer then counts the
    sample as missed (error pi, IoU 0, wrong class) and reports how many there were.
    """

    id: str
    category: str | None = None
    class_scores: dict[str, float] | None = None
    azimuth: float | None = None
    elevation: float | None = None
    theta: float | None = None
    distance: float | None = None
    amodal_mask: np.ndarray | None = None
    inmodal_mask: np.ndarray | None = None
    time_s: float | None = None
    failure: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_pose(self) -> bool:
        return all(v is not None and math.isfinite(v) for v in (self.azimuth, self.elevation, self.theta))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = mask_to_rle(value)
            elif isinstance(value, float) and not math.isfinite(value):
                value = None if math.isnan(value) else str(value)  # JSON has no NaN/inf
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Prediction":
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name.endswith("_mask") and value is not None:
                value = rle_to_mask(value)
            elif f.name in ("azimuth", "elevation", "theta", "distance", "time_s") and isinstance(value, str):
                value = float(value)
            kwargs[f.name] = value
        return cls(**kwargs)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE (``pycocotools.mask.encode``), ``counts`` as text so it fits in JSON;
    ``pycocotools.mask.decode`` reads it back to the same mask."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=bool).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """A mask from COCO RLE. A list of ``counts`` is the row-major format this project wrote before it
    used COCO's, which COCO would read as another mask: refused, so a stale file cannot score wrongly."""
    from pycocotools import mask as coco_mask

    counts = rle.get("counts") if isinstance(rle, dict) else None
    if isinstance(counts, list):
        raise DataError("mask in the old row-major run-length format (before COCO RLE); rerun with --fresh")
    if not isinstance(counts, str) or not isinstance(rle.get("size"), list) or len(rle["size"]) != 2:
        raise DataError(f"mask is not COCO RLE with 'size' [h, w] and string 'counts': {str(rle)[:60]}")
    with warnings.catch_warnings():  # pycocotools' Cython array wrapper predates numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = coco_mask.decode({"size": rle["size"], "counts": counts.encode("ascii")})
    return mask.astype(bool)
