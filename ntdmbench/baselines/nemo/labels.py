"""NeMo's per-vertex visibility labels for training, by the rule of the published code.

``Angtian/NeMo`` (``generate_3Dpascal3D.py`` -> ``MeshMemoryMap.MeshConverter.get_one`` ->
``CalculateOcc.cal_occ_one_image``) labels the cuboid's vertices once per training image, in the
*original* image (before NeMo's resize by distance / 5), with the true camera distance:

1. project every vertex and truncate to integer pixels ``(y, x)``; clamp a copy into the image;
2. distance of each vertex from the camera centre, min-max normalised over the mesh;
3. a z-buffer of that normalised distance: each triangle with area >= 1e-2 and a box of >= 3 pixels fills
   the pixels of its box ``[min, max)`` of its clamped corners whose barycentric area test passes to
   within 3 square pixels, with the plane through its three corners; pixels no triangle fills hold 0;
4. visible = ``|distance - zbuffer[pixel]| < 1e-3`` and the unclamped pixel lies inside the annotated
   object box ``box_ori`` (``y0 <= y < y1``, ``x0 <= x < x1``).

The original view comes from the sample's NeMo annotation (``annotations/{folder}/{name}.npz`` beside
``images/{folder}/``: ``height``, ``width``, ``principal``, ``box_ori``, and the true distance, ``distance``
in the original key set or ``distance * resize_rate`` in the refactored one). A sample without such a
file (built in memory) is its own original: its crop, pose and box.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ntdmbench.datasets.records import DataError, Pose, Sample
from ntdmbench.models.camera import camera_position, project

AREA_EPS = 3.0  # CalculateOcc.generate_mask_kernel: |A - (A1 + A2 + A3)| < 3
DEPTH_EPS = 1e-3  # cal_occ_one_image: |distance - zbuffer| < 1e-3, distances normalised to [0, 1]
VIEW_KEYS = ("height", "width", "principal", "box_ori", "distance")


@dataclass(frozen=True)
class OriginalView:
    """The image a crop was cut from: its size, the annotated camera there, the object box."""

    image_hw: tuple[int, int]
    pose: Pose  # true distance, principal point in original pixels
    box: tuple[float, float, float, float]  # (y0, y1, x0, x1), original pixels


def annotation_path(sample: Sample) -> Path | None:
    """``{split}/annotations/{folder}/{name}.npz`` for an image ``{split}/images/{folder}/{name}.*``."""
    image = sample.image_path
    if image is None or image.parent.parent.name != "images":
        return None
    return image.parent.parent.parent / "annotations" / image.parent.name / f"{image.stem}.npz"


def original_view(sample: Sample) -> OriginalView:
    """The sample's original view from its NeMo annotation, else the crop itself."""
    if sample.pose is None:
        raise DataError(f"sample {sample.id}: NeMo training needs a pose")
    path = annotation_path(sample)
    if path is None or not path.is_file():
        h, w = sample.load_image().shape[:2]
        x0, y0, x1, y1 = sample.bbox if sample.bbox is not None else (0, 0, w, h)
        return OriginalView((h, w), sample.pose, (y0, y1, x0, x1))
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in VIEW_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing key(s) {', '.join(missing)} for NeMo's visibility labels")
            fields = {k: np.asarray(z[k], dtype=float).ravel() for k in VIEW_KEYS + ("px", "resize_rate")
                      if k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable npz ({type(exc).__name__}: {exc})") from None
    distance = fields["distance"][0]
    if "px" in fields:  # refactored key set: the crop's distance, times the resize rate
        distance *= fields["resize_rate"][0] if "resize_rate" in fields else 1.0
    y0, y1, x0, x1 = fields["box_ori"][:4]
    pose = replace(sample.pose, distance=float(distance), principal=tuple(float(v) for v in fields["principal"][:2]))
    return OriginalView((int(fields["height"][0]), int(fields["width"][0])), pose, (y0, y1, x0, x1))


def _area(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    return (p0[..., 0] * (p1[..., 1] - p2[..., 1]) + p1[..., 0] * (p2[..., 1] - p0[..., 1])
            + p2[..., 0] * (p0[..., 1] - p1[..., 1])).abs() / 2


def zbuffer(points: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` z-buffer of per-vertex ``depth`` over triangles on integer pixels ``points`` ``(V, 2)`` (y, x),
    filled as ``CalculateOcc`` does (step 3 of the module docstring); float64."""
    H, W = image_hw
    out = torch.full((H * W,), torch.inf, dtype=torch.float64)
    corners = points[faces].double()  # (F, 3, 2)
    lo, hi = corners.amin(1), corners.amax(1)
    shape = (hi - lo).long()
    keep = (shape[:, 0] * shape[:, 1] >= 3) & (_area(corners[:, 0], corners[:, 1], corners[:, 2]) >= 1e-2)
    corners, lo, shape, d = corners[keep], lo[keep].long(), shape[keep], depth[faces[keep]].double()
    # plane depth = c0 * y + c1 * x + c2 through the three corners
    system = torch.cat([corners, torch.ones_like(corners[..., :1])], -1)
    coef = torch.linalg.solve(system, d)
    count = shape[:, 0] * shape[:, 1]
    face = torch.repeat_interleave(torch.arange(len(count)), count)
    local = torch.arange(int(count.sum())) - torch.repeat_interleave(count.cumsum(0) - count, count)
    yx = torch.stack([local // shape[face, 1], local % shape[face, 1]], 1) + lo[face]
    pos = yx.double()
    c = corners[face]
    inside = (_area(c[:, 0], c[:, 1], c[:, 2])
              - (_area(c[:, 0], c[:, 1], pos) + _area(c[:, 1], c[:, 2], pos) + _area(c[:, 0], c[:, 2], pos))
              ).abs() < AREA_EPS
    value = (coef[face] * torch.cat([pos, torch.ones_like(pos[:, :1])], 1)).sum(1)
    flat = yx[inside, 0] * W + yx[inside, 1]
    out.scatter_reduce_(0, flat, value[inside], "amin")
    out[torch.isinf(out)] = 0.0
    return out.view(H, W)


def official_visibility(vertices: torch.Tensor, faces: torch.Tensor, view: OriginalView) -> torch.Tensor:
    """``(V,)`` bool: NeMo's training visibility of each vertex (module docstring) in ``view``."""
    pose, (H, W) = view.pose, view.image_hw
    verts = torch.as_tensor(vertices, dtype=torch.float64)
    xy = project(verts, pose.azimuth, pose.elevation, pose.theta, pose.distance,
                 torch.tensor(pose.principal, dtype=torch.float64), pose.focal, pose.viewport)
    yx = xy.flip(-1).trunc().long()  # numpy astype(int32): toward zero
    clamped = torch.stack([yx[:, 0].clamp(0, H - 1), yx[:, 1].clamp(0, W - 1)], 1)
    distance = (verts - camera_position(pose.azimuth, pose.elevation, pose.distance).double()).norm(dim=1)
    distance = (distance - distance.min()) / (distance.max() - distance.min())
    z = zbuffer(clamped, distance, torch.as_tensor(faces, dtype=torch.long), (H, W))
    visible = (distance - z[clamped[:, 0], clamped[:, 1]]).abs() < DEPTH_EPS
    y0, y1, x0, x1 = view.box
    return visible & (yx[:, 0] >= y0) & (yx[:, 0] < y1) & (yx[:, 1] >= x0) & (yx[:, 1] < x1)
