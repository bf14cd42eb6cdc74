"""Occluded PASCAL3D+ as released (Angtian/OccludedPASCAL3D), with pose GT from the clean release.

Layout read (``root`` = ``OccludedPASCAL3D``), level k = ``FGL{k}_BGL{k}``:

- ``lists/{cate}FGLk_BGLk.txt``: image names with ``.JPEG``;
- ``images/{cate}FGLk_BGLk/{name}.JPEG`` (same size as the clean image);
- ``annotations/{cate}FGLk_BGLk/{name}.npz`` with ``occluder_mask`` (full image, required) and ``mask``
  (object segmentation from a JPEG, thresholded at > 10 as the generator does; optional). The npz ``box`` is
  not used: the generator built it with swapped axes; ``occluder_level`` is buggy upstream and ignored.
- Pose, bbox and cad_index come from the clean ``Annotations/{cate}_imagenet/{name}.mat`` of the
  PASCAL3D+ release (``clean_root``).

Masks: ``occluder_mask``; ``amodal_mask`` = ``mask > 10``; ``inmodal_mask`` = amodal and not occluded.
Ids ``{cate}/{name}_{obj:02d}`` equal the clean raw ids, so drops against clean pair by id.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ntdmbench.datasets.indexed import Entry, IndexedDataset, SampleSkip, Skips
from ntdmbench.datasets.pascal3d import cad_count, index_record, read_lines
from ntdmbench.datasets.records import CATEGORIES, DataError

PUBLISHED_COUNTS = {
    "FGL1_BGL1": 10421, "FGL2_BGL2": 10219, "FGL3_BGL3": 9983,
    "FGL1_BGL2": 10304, "FGL1_BGL3": 9143, "FGL2_BGL1": 10270,
    "FGL2_BGL3": 10125, "FGL3_BGL1": 9965, "FGL3_BGL2": 10056,
}
"""Images per level (Angtian/OccludedPASCAL3D README)."""

OBJECT_MASK_THRESHOLD = 10


def level_name(level: int) -> str:
    if level not in (1, 2, 3):
        raise ValueError(f"occlusion level must be 1, 2 or 3, got {level}")
    return f"FGL{level}_BGL{level}"


def read_occluder_masks(path: Path, image_hw: tuple[int, int]) -> dict[str, np.ndarray | None]:
    """``Sample`` mask fields from one level npz, checked against the image size."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "occluder_mask" not in z.files:
                raise DataError(f"{path}: missing key occluder_mask")
            occluder = np.asarray(z["occluder_mask"]).astype(bool)
            obj = np.asarray(z["mask"]) if "mask" in z.files else None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable or truncated npz ({type(exc).__name__}: {exc})") from None
    if obj is not None and obj.ndim == 3:
        obj = obj.max(axis=2)
    for key, mask in (("occluder_mask", occluder), ("mask", obj)):
        if mask is not None and mask.shape != tuple(image_hw):
            raise DataError(f"{path}: {key} has shape {mask.shape}, the image is {tuple(image_hw)}")
    amodal = None if obj is None else obj > OBJECT_MASK_THRESHOLD
    inmodal = None if amodal is None else amodal & ~occluder
    return {"occluder_mask": occluder, "amodal_mask": amodal, "inmodal_mask": inmodal}


class OccludedRaw(IndexedDataset):
    """One diagonal level of the released Occluded PASCAL3D+ (val), images in original coordinates."""

    format_version = "1"

    def __init__(self, root: Path, level: int, clean_root: Path, *, objects: str = "all",
                 categories: Iterable[str] = CATEGORIES, name: str | None = None):
        self.level = level_name(level)
        super().__init__(name or f"occluded-pascal3d-raw/val/L{level}", root)
        self.clean_root, self.objects, self.categories = Path(clean_root), objects, tuple(categories)
        self.tags = {"dataset": "occluded-pascal3d", "split": "val", "level": f"L{level}"}
        if not (self.root / "images").is_dir():
            raise DataError(f"{self.root}: no images/ folder; expected the OccludedPASCAL3D folder")
        if not (self.clean_root / "Annotations").is_dir():
            raise DataError(f"{self.clean_root}: no Annotations/ folder; the clean PASCAL3D+ release is needed for pose")

    def names(self, category: str) -> list[str]:
        folder = f"{category}{self.level}"
        listed = self.root / "lists" / f"{folder}.txt"
        if listed.is_file():
            return [Path(n).stem for n in read_lines(listed)]
        return sorted(p.stem for p in (self.root / "images" / folder).glob("*.JPEG"))

    def _build(self, skips: Skips) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        for category in self.categories:
            folder = f"{category}{self.level}"
            if not (self.root / "images" / folder).is_dir():
                continue
            limit = cad_count(self.clean_root, category)
            for name in self.names(category):
                image = self.root / "images" / folder / f"{name}.JPEG"
                npz = self.root / "annotations" / folder / f"{name}.npz"
                if image.is_file() and not npz.is_file():
                    skips.add(SampleSkip(f"{image}: image without annotation ({npz.name} missing)",
                                         "image without annotation"))
                    continue
                index_record(entries, skips, category=category, name=name, image=image,
                             mat=self.clean_root / "Annotations" / f"{category}_imagenet" / f"{name}.mat",
                             objects=self.objects, cad_limit=limit, tags=self.tags, mask_source=npz)
        if not entries and not skips:
            raise DataError(f"{self.root}/images: no {{category}}{self.level} folder with images")
        return entries

    def _masks(self, entry: Entry) -> dict[str, Any]:
        from PIL import Image

        with Image.open(entry.sample.image_path) as im:
            width, height = im.size
        return read_occluder_masks(entry.mask_source, (height, width))
