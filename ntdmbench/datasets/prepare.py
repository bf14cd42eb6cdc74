"""Raw release -> NeMo layout: the crop rule applied to every sample of a raw adapter.

Writes the refactored (wufeim/NeMo) layout that ``NemoDataset`` reads:
``{out}/{split}/images/{cate}{pendix}/{name}.JPEG``, ``annotations/.../{name}.npz`` with the keys
``name, box, box_ori, box_obj, occ_mask, amodal_mask, inmodal_mask, px, py, distance, azimuth, elevation,
theta, focal, principal, viewport, cad_index, bbox, height, width, resize_rate, padding_params``
(+ ``nuisance`` for OOD-CV; + NeMo's 2D-stage ``cropped_kp_list``, ``visible`` when the sample carries
semantic keypoints), and ``lists/{cate}{pendix}/meshNN.txt`` grouped by ``cad_index``.
Angles are radians, ``distance`` is 5 (the crop's), ``principal``/``bbox`` stay in original pixels, masks
are uint8 in crop coordinates or ``None``. Like NeMo, only object 0 of each image is kept (``first``).
A ``manifest.json`` in ``{out}`` records the sample count per catalog name, which ``validate`` then expects.
"""

from __future__ import annotations

import json
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from ntdmbench.datasets.crop import CROP_SIZES, Crop
from ntdmbench.datasets.indexed import IndexedDataset, Skips
from ntdmbench.datasets.records import CATEGORIES, DataError, Keypoints, Sample
from ntdmbench.errors import InputError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "ntdmbench-manifest/1"


def save_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` with fixed zip timestamps, so the same content gives byte-identical files."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=True)


def nemo_record(sample: Sample, image_hw: tuple[int, int], crop: Crop) -> dict:
    """The refactored-layout npz fields of one cropped sample."""
    pose = sample.pose
    h, w = image_hw
    x0, y0, x1, y1 = np.trunc(sample.bbox)
    box_ori = [np.clip(y0, 0, h), np.clip(y1, 0, h), np.clip(x0, 0, w), np.clip(x1, 0, w), h, w]
    masks = {key: None if mask is None else crop.apply(mask).astype(np.uint8)
             for key, mask in (("occ_mask", sample.occluder_mask), ("amodal_mask", sample.amodal_mask),
                               ("inmodal_mask", sample.inmodal_mask))}
    px, py = crop.principal_in_crop
    record = dict(
        name=sample.id.split("/", 1)[1].rsplit("_", 1)[0],
        box=crop.window_box(), box_ori=np.asarray(box_ori, dtype=np.float32), box_obj=crop.box_obj(sample.bbox),
        **masks, px=px, py=py, distance=5.0,
        azimuth=pose.azimuth, elevation=pose.elevation, theta=pose.theta, focal=pose.focal,
        principal=np.asarray(pose.principal, dtype=float), viewport=pose.viewport, cad_index=sample.cad_index,
        bbox=np.asarray(sample.bbox, dtype=float), height=h, width=w, resize_rate=crop.resize_rate,
        padding_params=np.asarray(crop.padding, dtype=np.int64),
    )
    if sample.keypoints is not None:
        record.update(keypoint_fields(sample.keypoints, crop))
    if "nuisance" in sample.tags:
        record["nuisance"] = sample.tags["nuisance"]
    return record


def keypoint_fields(keypoints: Keypoints, crop: Crop) -> dict[str, np.ndarray]:
    """NeMo's 2D-stage ``cropped_kp_list`` (``[y, x]`` crop pixels, 0 where not visible) and ``visible`` (0/1).

    Visibility is the sample's, already cleared under an occluder; it is not recomputed here.
    """
    visible = np.asarray(keypoints.visible, dtype=bool)
    yx = crop.points(keypoints.xy)[:, ::-1]
    return {"cropped_kp_list": np.where(visible[:, None], yx, 0.0), "visible": visible.astype(np.int64)}


@dataclass
class NemoWriter:
    """Writes cropped samples under one split folder and, on ``finish``, the mesh lists."""

    split_root: Path
    crop_sizes: dict[str, tuple[int, int]] = field(default_factory=lambda: CROP_SIZES["refactor"])
    lists: dict[str, dict[int, list[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def write(self, sample: Sample, pendix: str) -> None:
        image = sample.load_image()
        crop = Crop.around_principal(sample.pose.principal, sample.pose.distance, image.shape[:2],
                                     self.crop_sizes[sample.category])
        folder = f"{sample.category}{pendix}"
        name = sample.id.split("/", 1)[1]
        for sub in ("images", "annotations"):
            (self.split_root / sub / folder).mkdir(parents=True, exist_ok=True)
        save_npz(self.split_root / "annotations" / folder / f"{name}.npz", nemo_record(sample, image.shape[:2], crop))
        Image.fromarray(crop.apply(image)).save(self.split_root / "images" / folder / f"{name}.JPEG", quality=95)
        self.lists[folder][sample.cad_index].append(name)

    def finish(self) -> None:
        from ntdmbench.datasets.pascal3d import MESH_LEN

        for folder, by_cad in self.lists.items():
            target = self.split_root / "lists" / folder
            target.mkdir(parents=True, exist_ok=True)
            category = next(c for c in CATEGORIES if folder.startswith(c))
            for cad in range(1, max(MESH_LEN[category], *by_cad) + 1):
                (target / f"mesh{cad:02d}.txt").write_text("\n".join(sorted(by_cad.get(cad, []))))


@dataclass
class Prepared:
    """What one ``prepare`` call wrote: samples per catalog name, and what it skipped."""

    counts: dict[str, int] = field(default_factory=dict)
    skips: Skips = field(default_factory=Skips)

    def lines(self) -> list[str]:
        out = [f"{name}: {n} samples" for name, n in sorted(self.counts.items())]
        return out + [message for _, message in self.skips.items] + [self.skips.summary()]


def write_split(source: IndexedDataset, writer: NemoWriter, pendix: str, catalog_name: str, result: Prepared) -> None:
    """Crop every sample of ``source`` into ``writer``; source and write failures become counted skips."""
    written = 0
    for sample_id in source.ids():
        try:
            writer.write(source.load(sample_id), pendix)
            written += 1
        except DataError as exc:
            result.skips.add(exc)
    result.skips.items.extend(source.skips.items)
    result.counts[catalog_name] = result.counts.get(catalog_name, 0) + written


def update_manifest(out_root: Path, counts: dict[str, int]) -> Path:
    path = out_root / MANIFEST
    data = json.loads(path.read_text()) if path.is_file() else {"format": MANIFEST_FORMAT, "counts": {}}
    data.setdefault("counts", {}).update(counts)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def prepare_pascal3d(raw_root: Path, out_root: Path, *, split: str = "val", levels: Iterable[int] = (0,),
                     occluded_root: Path | None = None, sizes: str = "refactor",
                     categories: Iterable[str] = CATEGORIES) -> Prepared:
    """PASCAL3D+ ImageNet ``split`` (level 0) and Occluded PASCAL3D+ levels 1-3 (val only) -> NeMo layout."""
    from ntdmbench.datasets.nemo_format import pendix_for
    from ntdmbench.datasets.occluded import OccludedRaw
    from ntdmbench.datasets.pascal3d import Pascal3DRaw

    categories, result = tuple(categories), Prepared()
    writer = NemoWriter(Path(out_root) / split, CROP_SIZES[sizes])
    for level in levels:
        if level == 0:
            source = Pascal3DRaw(raw_root, split, objects="first", categories=categories)
            write_split(source, writer, "", f"pascal3d/{split}", result)
            continue
        if split != "val":
            raise InputError(f"occluded levels exist for val only, not {split!r}")
        if occluded_root is None:
            raise InputError("occluded levels need --occluded-root (the OccludedPASCAL3D folder)")
        source = OccludedRaw(occluded_root, level, raw_root, objects="first", categories=categories)
        write_split(source, writer, pendix_for(level), f"occluded-pascal3d/val/L{level}", result)
    writer.finish()
    update_manifest(Path(out_root), result.counts)
    return result


def prepare_oodcv(raw_root: Path, out_root: Path, *, sizes: str = "refactor",
                  categories: Iterable[str] | None = None) -> Prepared:
    """OOD-CV test nuisances (and iid) -> NeMo layout ``{out}/val/.../{cate}/`` with a ``nuisance`` key."""
    from ntdmbench.datasets.oodcv import NUISANCES, OODCV_CATEGORIES, OodcvRaw

    result = Prepared()
    writer = NemoWriter(Path(out_root) / "val", CROP_SIZES[sizes])
    for nuisance in NUISANCES + ("iid",):
        source = OodcvRaw(raw_root, nuisance, categories=tuple(categories or OODCV_CATEGORIES))
        write_split(source, writer, "", f"oodcv/test/{nuisance}", result)
    writer.finish()
    update_manifest(Path(out_root), result.counts)
    return result
