"""Small fixture trees in the published formats: PASCAL3D+ ``.mat`` records (MATLAB structs, degrees),
Occluded PASCAL3D+ npz, OOD-CV lists, and NeMo-layout npz in both key sets (radians)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

OBJECT_FIELDS = ("class", "bbox", "truncated", "occluded", "difficult", "cad_index", "viewpoint")


def viewpoint(azimuth=30.0, elevation=10.0, theta=-5.0, distance=10.0, px=150.0, py=100.0, **extra) -> dict:
    """A PASCAL3D+ viewpoint struct; angles in degrees. ``None`` writes an empty field."""
    fields = dict(azimuth=azimuth, elevation=elevation, theta=theta, distance=distance, focal=1.0, px=px, py=py,
                  viewport=3000.0, azimuth_coarse=azimuth if azimuth is not None else 45.0,
                  elevation_coarse=elevation if elevation is not None else 15.0, **extra)
    return {k: np.zeros((0, 0)) if v is None else v for k, v in fields.items()}


def obj(category="car", bbox=(100, 60, 200, 140), cad_index=2, view=None, drop=()) -> dict:
    out = {"class": category, "bbox": np.asarray(bbox, dtype=float), "truncated": 0, "occluded": 0,
           "difficult": 0, "cad_index": cad_index, "viewpoint": viewpoint() if view is None else view}
    return {k: v for k, v in out.items() if k not in drop}


def write_record(path: Path, objects: list[dict], size=(300, 200)) -> None:
    """``record`` with a 1xN struct array ``objects`` (missing fields stay absent from every object)."""
    names = [f for f in OBJECT_FIELDS if all(f in o for o in objects)]
    array = np.zeros((1, len(objects)), dtype=[(n, object) for n in names])
    for i, o in enumerate(objects):
        array[0, i] = tuple(o[n] for n in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"filename": path.stem + ".JPEG", "database": "ImageNet",
              "imgsize": np.array([size[0], size[1], 3], dtype=float), "objects": array}
    scipy.io.savemat(path, {"record": record})


def write_image(path: Path, size=(300, 200), seed=0) -> np.ndarray:
    """A random RGB image of ``size`` = (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def raw_release(root: Path, images: dict[str, list[dict]], category="car", split="val", size=(300, 200),
                n_cad=10) -> Path:
    """``PASCAL3D+_release1.1`` with one ImageNet image per entry of ``images`` (name -> objects)."""
    for name, objects in images.items():
        write_image(root / "Images" / f"{category}_imagenet" / f"{name}.JPEG", size)
        write_record(root / "Annotations" / f"{category}_imagenet" / f"{name}.mat", objects, size)
    (root / "Image_sets").mkdir(parents=True, exist_ok=True)
    (root / "Image_sets" / f"{category}_imagenet_{split}.txt").write_text("".join(f"{n}\n" for n in images))
    (root / "CAD" / category).mkdir(parents=True, exist_ok=True)
    for i in range(1, n_cad + 1):
        (root / "CAD" / category / f"{i:02d}.off").write_text("OFF\n0 0 0\n")
    return root


def occluder_mask(size=(300, 200)) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[80:120, 120:260] = True
    return mask


def object_mask(size=(300, 200)) -> np.ndarray:
    """A greyscale JPEG-like object mask (0 / 255, with faint noise below the > 10 threshold)."""
    mask = np.full((size[1], size[0]), 5, dtype=np.uint8)
    mask[60:140, 100:200] = 255
    return mask


def occluded_level(root: Path, names: list[str], level=1, category="car", size=(300, 200)) -> Path:
    folder = f"{category}FGL{level}_BGL{level}"
    for name in names:
        write_image(root / "images" / folder / f"{name}.JPEG", size, seed=level)
        (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        np.savez(root / "annotations" / folder / f"{name}.npz", source=f"Images/{category}_imagenet/{name}.JPEG",
                 occluder_mask=occluder_mask(size), mask=object_mask(size),
                 box=np.array([100, 200, 60, 140, size[1], size[0]], dtype=np.float32), category=category,
                 occluder_level="G")
    (root / "lists").mkdir(parents=True, exist_ok=True)
    (root / "lists" / f"{folder}.txt").write_text("".join(f"{n}.JPEG\n" for n in names))
    return root


def nemo_npz(path: Path, keyset="refactor", crop=(256, 672), angles=(0.5, 0.2, -0.1), drop=(), **override) -> dict:
    """One NeMo-layout annotation (radians) in the refactored or original key set."""
    h, w = crop
    fields = dict(name=path.stem, box=np.array([72, 328, 0, 672, 400, 672], dtype=np.float32),
                  box_ori=np.array([60, 140, 100, 200, 200, 300], dtype=np.float32),
                  box_obj=np.array([48, 208, 236, 436, h, w], dtype=np.float32),
                  azimuth=angles[0], elevation=angles[1], theta=angles[2], focal=1.0, viewport=3000.0,
                  principal=np.array([150.0, 100.0]), cad_index=2, bbox=np.array([100.0, 60, 200, 140]),
                  height=200, width=300)
    if keyset == "refactor":
        occ = np.zeros(crop, dtype=np.uint8)
        occ[10:20, 30:40] = 1
        fields.update(distance=5.0, px=float(w // 2), py=float(h // 2), resize_rate=2.0,
                      padding_params=np.zeros(6, dtype=np.int64), occ_mask=occ, amodal_mask=None, inmodal_mask=None)
    else:
        fields.update(distance=10.0, occ_mask=None, cropped_kp_list=np.zeros((12, 2)), visible=np.ones(12))
    fields.update(override)
    fields = {k: v for k, v in fields.items() if k not in drop}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **fields)
    return fields


def nemo_root(root: Path, samples: dict[str, dict], split="val", pendix="", keyset="refactor") -> Path:
    """``{root}/{split}/{images,annotations}/{cate}{pendix}`` with ``{cate}/{name}`` -> npz overrides."""
    for sample_id, override in samples.items():
        category, name = sample_id.split("/")
        folder = root / split
        nemo_npz(folder / "annotations" / f"{category}{pendix}" / f"{name}.npz", keyset, **override)
        write_image(folder / "images" / f"{category}{pendix}" / f"{name}.JPEG", (672, 256))
    return root
