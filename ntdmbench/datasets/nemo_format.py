"""The NeMo-preprocessed layout, which the models consume: crops at distance 5 with per-sample ``.npz``.

Layout under a split folder (``{root}/{train|val}/`` in the refactored wufeim/NeMo layout, or an original
Angtian/NeMo root ``PASCAL3D_NeMo`` / ``PASCAL3D_OCC_NeMo`` (val) / ``PASCAL3D_train_NeMo`` (train)):

- ``annotations/{cate}{pendix}/{name}.npz`` and ``images/{cate}{pendix}/{name}.JPEG`` (``.jpg``/``.png`` accepted),
  ``pendix`` = ``''`` (clean) or ``FGL{k}_BGL{k}`` (occluded level k);
- ``lists/{cate}{pendix}/meshNN.txt`` (names, with or without ``.JPEG``): checked by ``validate``, not needed here.

Required npz keys (both key sets): ``azimuth, elevation, theta`` (radians), ``distance``, ``box_obj``
(BboxTools ``[y0, y1, x0, x1, H, W]``, boundary = crop size) and ``cad_index`` (1-based).
Optional: ``focal``, ``viewport`` (default 1 and 3000); ``nuisance`` (OOD-CV val; required when filtering by it).

- Refactored key set (has ``px, py``): the pose is ``(px, py)`` and ``distance`` as stored (the crop's);
  ``occ_mask``, ``amodal_mask``, ``inmodal_mask`` are in crop coordinates (``None`` when absent).
- Original key set (no ``px``): every crop is at distance 5 with the principal point at the crop centre
  (what ``Pascal3DPlus.__getitem__`` returns); ``distance <= 0`` is a counted skip. ``occ_mask`` is the
  full-resolution occluder mask of the original image and is carried into the crop with the crop rule
  (from ``principal``, ``distance``, ``height``, ``width``).

Semantic keypoints: NeMo's 2D stage writes ``cropped_kp_list`` (``[y, x]`` crop pixels, 0 where not visible)
and ``visible`` (0/1, after occlusion), one row per ``KEYPOINT_NAMES[cate]`` name; they become
``Sample.keypoints``. NeMo's 3D stage (``annotations3D_*``, and the refactor unless ``skip_3d_anno``)
overwrites both keys with one row per mesh vertex: a row count other than the category's keypoint count
is read as no keypoints (``keypoints=None``), as are files without the keys.

An angle outside [-2pi, 2pi] means the file holds degrees: the sample is skipped, not converted.
Sample ids are ``{cate}/{name}``: a clean sample and its occluded versions share the id.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ntdmbench.datasets.crop import Crop, bbt_to_xyxy
from ntdmbench.datasets.indexed import Entry, IndexedDataset, SampleSkip, Skips
from ntdmbench.datasets.keypoints import KEYPOINT_NAMES
from ntdmbench.datasets.records import CATEGORIES, DataError, Keypoints, Pose, Sample

REQUIRED_KEYS = ("azimuth", "elevation", "theta", "distance", "box_obj", "cad_index")
REFACTOR_KEYS = ("px", "py")
KEYPOINT_KEYS = ("cropped_kp_list", "visible")
MASK_KEYS = {"occ_mask": "occluder_mask", "amodal_mask": "amodal_mask", "inmodal_mask": "inmodal_mask"}
IMAGE_EXTS = (".JPEG", ".jpg", ".jpeg", ".png")
ORIGINAL_ROOTS = {"val": ("PASCAL3D_NeMo", "PASCAL3D_OCC_NeMo", "OOD_CV_NeMo"), "train": ("PASCAL3D_train_NeMo",)}


def pendix_for(level: int) -> str:
    return f"FGL{level}_BGL{level}" if level else ""


def split_root(root: Path, split: str) -> Path:
    """``{root}/{split}`` (refactored layout) or ``root`` itself when it is an original single-split root."""
    root = Path(root)
    if (root / split / "annotations").is_dir():
        return root / split
    if (root / "annotations").is_dir() and (root.name == split or root.name in ORIGINAL_ROOTS.get(split, ())):
        return root
    raise DataError(f"{root}: no {split}/annotations/ folder; expected the NeMo layout "
                    f"{{root}}/{split}/{{images,annotations,lists}}/{{category}}[FGLk_BGLk]/")


def read_npz_fields(path: Path, keys: Iterable[str], required: Iterable[str] = REQUIRED_KEYS) -> dict[str, Any]:
    """The named members of one npz (only those present), failing one-line on a bad or incomplete file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in required if k not in z.files]
            if missing:
                raise SampleSkip(f"{path}: missing key(s) {', '.join(missing)}", "missing key")
            return {k: z[k] for k in keys if k in z.files}
    except SampleSkip:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise SampleSkip(f"{path}: unreadable or truncated npz ({type(exc).__name__}: {exc})", "unreadable npz") from None


def _float(fields: dict[str, Any], key: str, path: Path, default: float | None = None) -> float:
    if key not in fields:
        if default is None:
            raise SampleSkip(f"{path}: missing key {key}", "missing key")
        return default
    try:
        return float(np.asarray(fields[key], dtype=float).ravel()[0])
    except (IndexError, ValueError, TypeError):
        raise SampleSkip(f"{path}: key {key} is not a number", "bad value") from None


def parse_npz(path: Path, fields: dict[str, Any]) -> tuple[Pose, tuple[float, ...], int, str | None]:
    """Pose, bbox ``(x0, y0, x1, y1)`` in crop pixels, cad_index and nuisance of one npz's fields."""
    angles = [_float(fields, k, path) for k in ("azimuth", "elevation", "theta")]
    if not all(math.isfinite(a) for a in angles):
        raise SampleSkip(f"{path}: non-finite angle {angles}", "bad value")
    if any(abs(a) > 2 * math.pi + 1e-6 for a in angles):
        raise SampleSkip(f"{path}: angles {angles} exceed 2*pi; the npz must hold radians", "degrees in npz")
    box = np.asarray(fields["box_obj"], dtype=float).ravel()
    if box.size != 6:
        raise SampleSkip(f"{path}: box_obj must be [y0, y1, x0, x1, H, W], got {box.size} values", "bad value")
    crop_h, crop_w = box[4], box[5]
    distance = _float(fields, "distance", path)
    if all(k in fields for k in REFACTOR_KEYS):
        principal = (_float(fields, "px", path), _float(fields, "py", path))
    else:
        if not distance > 0:
            raise SampleSkip(f"{path}: distance {distance:g}, no valid 3D annotation", "distance 0")
        distance, principal = 5.0, (float(crop_w // 2), float(crop_h // 2))
    pose = Pose(*angles, distance=distance, principal=principal,
                focal=_float(fields, "focal", path, 1.0), viewport=_float(fields, "viewport", path, 3000.0))
    nuisance = str(fields["nuisance"]) if "nuisance" in fields else None
    return pose, bbt_to_xyxy(box), int(_float(fields, "cad_index", path)), nuisance


def parse_keypoints(fields: dict[str, Any], category: str) -> Keypoints | None:
    """The 2D-stage semantic keypoints of one npz's fields in crop pixels (x, y); None when absent or when
    the rows are not the category's keypoints (the 3D stage's per-vertex projections)."""
    names = KEYPOINT_NAMES.get(category)
    if names is None or "cropped_kp_list" not in fields or "visible" not in fields:
        return None
    yx = np.asarray(fields["cropped_kp_list"], dtype=float)
    visible = np.asarray(fields["visible"]).ravel()
    if yx.shape != (len(names), 2) or visible.shape != (len(names),):
        return None
    return Keypoints(names, yx[:, ::-1].copy(), visible == 1)


def _mask(value: Any) -> np.ndarray | None:
    if value is None or (isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0):
        value = None if value is None else value.item()
    if value is None:
        return None
    arr = np.asarray(value)
    return arr.any(axis=2) if arr.ndim == 3 else arr.astype(bool)


def read_masks(path: Path) -> dict[str, np.ndarray | None]:
    """``Sample`` mask fields of one npz, in crop coordinates."""
    try:
        with np.load(path, allow_pickle=True) as z:
            raw = {field: _mask(z[key]) if key in z.files else None for key, field in MASK_KEYS.items()}
            fields = {k: z[k] for k in ("box_obj", "px", "principal", "distance", "height", "width") if k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable or truncated npz ({type(exc).__name__}: {exc})") from None
    box = np.asarray(fields["box_obj"], dtype=float).ravel()
    crop_hw = (int(box[4]), int(box[5]))
    out = {}
    for field, mask in raw.items():
        if mask is not None and mask.shape != crop_hw:
            mask = _into_crop(path, field, mask, fields, crop_hw)
        out[field] = mask
    return out


def _into_crop(path: Path, field: str, mask: np.ndarray, fields: dict[str, Any], crop_hw) -> np.ndarray:
    """An original-key-set occluder mask (full image) carried into the crop with the crop rule."""
    needed = ("principal", "distance", "height", "width")
    image_hw = tuple(int(np.asarray(fields[k]).ravel()[0]) for k in ("height", "width")) if all(
        k in fields for k in needed) else None
    if "px" in fields or image_hw is None or mask.shape != image_hw:
        raise DataError(f"{path}: {field} has shape {mask.shape}, neither the crop {crop_hw} "
                        f"nor (original key set) the image {image_hw}")
    principal = np.asarray(fields["principal"], dtype=float).ravel()
    crop = Crop.around_principal((principal[0], principal[1]), float(np.asarray(fields["distance"]).ravel()[0]),
                                 image_hw, crop_hw)
    return crop.apply(mask)


class NemoDataset(IndexedDataset):
    """Samples of one split / occlusion level (/ OOD-CV nuisance) of a NeMo-preprocessed root."""

    format_version = "1"

    def __init__(self, root: Path, split: str, *, level: int = 0, nuisance: str | None = None,
                 categories: Iterable[str] = CATEGORIES, dataset: str = "pascal3d", name: str | None = None):
        super().__init__(name or f"{dataset}/{split}", root)
        self.split_root = split_root(self.root, split)
        self.pendix, self.nuisance = pendix_for(level), nuisance
        self.categories = tuple(categories)
        self.tags = {"dataset": dataset, "split": split, "level": f"L{level}"}
        if nuisance:
            self.tags["nuisance"] = nuisance

    def category_folders(self) -> dict[str, str]:
        """``{category: folder}`` for the categories present at this level."""
        annotations = self.split_root / "annotations"
        present = {c: f"{c}{self.pendix}" for c in self.categories if (annotations / f"{c}{self.pendix}").is_dir()}
        if not present:
            seen = sorted(p.name for p in annotations.iterdir() if p.is_dir())
            raise DataError(f"{annotations}: no {{category}}{self.pendix} folder for {self.name}; "
                            f"found {seen[:8] or 'nothing'}")
        return present

    def _build(self, skips: Skips) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        keys = REQUIRED_KEYS + REFACTOR_KEYS + ("focal", "viewport", "nuisance") + KEYPOINT_KEYS
        required = REQUIRED_KEYS + (("nuisance",) if self.nuisance else ())
        for category, folder in self.category_folders().items():
            anno_dir, image_dir = self.split_root / "annotations" / folder, self.split_root / "images" / folder
            npz = {p.stem: p for p in anno_dir.glob("*.npz")}
            images = {p.stem: p for p in image_dir.glob("*") if p.suffix in IMAGE_EXTS} if image_dir.is_dir() else {}
            for stem in sorted(set(images) - set(npz)):
                skips.add(SampleSkip(f"{images[stem]}: image without annotation", "image without annotation"),
                          f"{category}/{stem}")
            for stem, path in sorted(npz.items()):
                try:
                    if stem not in images:
                        raise SampleSkip(f"{path}: no image {image_dir / stem}.JPEG", "annotation without image")
                    fields = read_npz_fields(path, keys, required)
                    pose, bbox, cad, nuisance = parse_npz(path, fields)
                except DataError as exc:
                    skips.add(exc, f"{category}/{stem}")
                    continue
                if self.nuisance and nuisance != self.nuisance:
                    continue
                tags = dict(self.tags, **({"nuisance": nuisance} if nuisance else {}))
                sample_id = f"{category}/{stem}"
                entries[sample_id] = Entry(Sample(sample_id, category, pose, image_path=images[stem], bbox=bbox,
                                                  cad_index=cad, keypoints=parse_keypoints(fields, category),
                                                  tags=tags), path)
        return entries

    def _masks(self, entry: Entry) -> dict[str, Any]:
        return read_masks(entry.mask_source)
